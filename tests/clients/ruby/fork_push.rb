# frozen_string_literal: true

# Pushes a QuickJob, forks a child that pushes one and exits, then pushes a third: prints the three
# jids as a JSON array. With our middleware (SIDEKIQ_TEST_REQUIRE) the parent's sender thread is
# running at the fork; the child must report its own job (a sender of its own, flushed at its exit)
# and must not resend what the parent had buffered.
require "json"
require_relative "../../sidekiq/real/app"

first = QuickJob.perform_async("before the fork")
reader, writer = IO.pipe
child_pid = fork do
  reader.close
  # redis-rb refuses a connection inherited from the parent: give the child a pool of its own.
  Sidekiq.configure_client { |config| config.redis = {url: ENV.fetch("REDIS_URL")} }
  writer.puts(QuickJob.perform_async("in the child"))
  writer.close
end
writer.close
child = reader.read.strip
Process.wait(child_pid)
raise "the child exited with #{$?.exitstatus}" unless $?.success?

last = QuickJob.perform_async("after the fork")
puts JSON.generate([first, child, last])
