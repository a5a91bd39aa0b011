# frozen_string_literal: true

# Loaded into real Sidekiq by benchmarks/middleware.py (SIDEKIQ_TEST_REQUIRE). Each NoopJob's first
# argument says whether our server middleware wraps it ("on") or not ("off"), so both kinds run in
# the same process, interleaved. An outermost timer measures the whole server middleware chain
# of every job and RPUSHes "<on|off> <seconds>" to supervisor-bench:chain after the measured span.
# middleware_client.rb does the same for pushes. The reporter is configured from the
# SIDEKIQ_SUPERVISOR_* environment, as install! would; install! itself is not called because it
# would wrap every job.
require_relative "../clients/ruby/sidekiq_supervisor"

class NoopJob
  include Sidekiq::Worker

  def perform(*_args)
  end
end

module MiddlewareBench
  CHAIN = "supervisor-bench:chain"

  def self.clock
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def self.flag(job)
    job["args"][0] == "on" ? "on" : "off"
  end

  class ServerTimer
    def call(_job_instance, job, _queue)
      start = MiddlewareBench.clock
      yield
    ensure
      elapsed = MiddlewareBench.clock - start
      Sidekiq.redis { |redis| redis.rpush(CHAIN, "#{MiddlewareBench.flag(job)} #{elapsed}") }
    end
  end

  class ServerSwitch
    def call(job_instance, job, queue, &block)
      return yield unless MiddlewareBench.flag(job) == "on"

      SidekiqSupervisor::ServerMiddleware.new.call(job_instance, job, queue, &block)
    end
  end
end

Sidekiq.configure_server do |config|
  config.server_middleware do |chain|
    chain.add MiddlewareBench::ServerTimer
    chain.add MiddlewareBench::ServerSwitch
  end
end
