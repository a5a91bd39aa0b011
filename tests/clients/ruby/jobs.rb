# frozen_string_literal: true

# Jobs the middleware tests add to tests/sidekiq/real/app.rb's (loaded through SIDEKIQ_TEST_REQUIRE).

# Pushes a QuickJob (to "default") from inside a job, so only the server's client middleware can
# report it; LPUSHes "<own jid> <child jid>" to supervisor-test:children.
class ParentJob
  include Sidekiq::Worker

  def perform(*_args)
    child = QuickJob.perform_async("child of #{jid}")
    SupervisorTest.with_redis { |redis| redis.lpush("supervisor-test:children", "#{jid} #{child}") }
  end
end
