# frozen_string_literal: true

# Reports COUNT `queued` events through clients/ruby/sidekiq_supervisor.rb without Sidekiq running
# (configured from the SIDEKIQ_SUPERVISOR_* env), then prints SidekiqSupervisor.stats as JSON.
# stdin: "COUNT wait" waits (15 s at most) until every event is sent or given up;
#        "COUNT exit" calls SidekiqSupervisor.shutdown (the at-exit flush) first.
require "json"
require "logger"
require_relative "../../../clients/ruby/sidekiq_supervisor"

words = $stdin.read.split
count = Integer(words.fetch(0))
how = words.fetch(1)
SidekiqSupervisor.configure { |config| config.logger = Logger.new($stderr) }
count.times do |index|
  job = {"jid" => format("%024x", index), "class" => "WireJob", "args" => [index, "héllo"], "queue" => "wire"}
  SidekiqSupervisor.job_pushed(job, "wire")
end

if how == "wait"
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 15
  loop do
    stats = SidekiqSupervisor.stats
    break if stats.values_at(:sent, :rejected, :dropped).sum >= count
    break if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

    sleep 0.02
  end
else
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  SidekiqSupervisor.shutdown
  $stderr.puts("shutdown took #{Process.clock_gettime(Process::CLOCK_MONOTONIC) - started} s")
end
puts JSON.generate(SidekiqSupervisor.stats)
