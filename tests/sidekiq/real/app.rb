# frozen_string_literal: true

# The Sidekiq app the real-Sidekiq tests run (`sidekiq -r tests/sidekiq/real/app.rb`), also
# required by enqueue.rb and inspect.rb. Redis comes from REDIS_URL (a test database of its own).
# SIDEKIQ_TEST_REQUIRE lists extra Ruby files to load (":"-separated), e.g. a middleware under test.
require "sidekiq"
require "redis"

# redis-rb 4.8 warns about calls Sidekiq 6.4.1 itself makes; keep the log readable.
Redis.silence_deprecations = true

redis_url = ENV.fetch("REDIS_URL")
Sidekiq.configure_server { |config| config.redis = {url: redis_url} }
Sidekiq.configure_client { |config| config.redis = {url: redis_url} }

# Keys the jobs below write so a test can see them start and finish without sleeping.
module SupervisorTest
  STARTED = "supervisor-test:started"   # HoldJob LPUSHes its jid on start
  DONE = "supervisor-test:done"         # QuickJob LPUSHes its jid when it runs
  RELEASE = "supervisor-test:release:"  # + jid: the list a HoldJob waits on
  RUNS = "supervisor-test:runs:"        # + jid: how often a FlakyJob has run

  def self.with_redis
    redis = Redis.new(url: ENV.fetch("REDIS_URL"))
    yield redis
  ensure
    redis&.close
  end
end

# Stays busy until the test LPUSHes anything to supervisor-test:release:<jid>, or until
# `hold_seconds` pass. Uses its own connection so held jobs never starve Sidekiq's pool.
class HoldJob
  include Sidekiq::Worker

  def perform(hold_seconds = 30)
    SupervisorTest.with_redis do |redis|
      redis.lpush(SupervisorTest::STARTED, jid)
      redis.blpop("#{SupervisorTest::RELEASE}#{jid}", timeout: hold_seconds)
    end
  end
end

# Succeeds at once and LPUSHes its jid to DONE.
class QuickJob
  include Sidekiq::Worker

  def perform(*_args)
    SupervisorTest.with_redis { |redis| redis.lpush(SupervisorTest::DONE, jid) }
  end
end

class Boom < StandardError; end

# Raises. Its retry is an hour away, so a retried job never comes back during a test; push it
# with "retry" => 0 to send it straight to the dead set.
class ExplodeJob
  include Sidekiq::Worker
  sidekiq_retry_in { |_count, _exception| 3600 }

  def perform(message = "boom")
    raise Boom, message
  end
end

# Fails on its first run (to `retry`, an hour away; or to `dead` when pushed with "retry" => 0),
# succeeds on any later run and then LPUSHes its jid to DONE: for retry-now and requeue tests.
class FlakyJob
  include Sidekiq::Worker
  sidekiq_retry_in { |_count, _exception| 3600 }

  def perform(*_args)
    SupervisorTest.with_redis do |redis|
      raise Boom, "first run of #{jid}" if redis.incr("#{SupervisorTest::RUNS}#{jid}") == 1

      redis.lpush(SupervisorTest::DONE, jid)
    end
  end
end

ENV.fetch("SIDEKIQ_TEST_REQUIRE", "").split(":").reject(&:empty?).each { |path| require File.expand_path(path) }
