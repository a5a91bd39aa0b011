# frozen_string_literal: true

# Measures the time clients/ruby/sidekiq_supervisor.rb adds to each push and each job: a timer
# just outside our middleware minus a timer just inside it (so the job's own run and the rest of
# the chain do not count). Load after supervised.rb. Each measurement is LPUSHed, after the
# measured span, to supervisor-test:overhead:<client|server|death> as "<jid> <seconds>".
# Server entries cover two events (started, then complete or failed); the others one.
module OverheadTiming
  KEY = "supervisor-test:overhead:"

  def self.clock
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def self.record(kind, jid, seconds)
    Sidekiq.redis { |redis| redis.lpush("#{KEY}#{kind}", "#{jid} #{format("%.6f", seconds)}") }
  rescue StandardError => e
    warn("overhead timing: #{e.class}: #{e.message}")
  end

  class ServerOuter
    def call(_job_instance, job, _queue)
      Thread.current[:supervisor_test_inner] = 0.0
      start = OverheadTiming.clock
      yield
    ensure
      OverheadTiming.record("server", job["jid"], OverheadTiming.clock - start - Thread.current[:supervisor_test_inner])
    end
  end

  class ServerInner
    def call(*)
      start = OverheadTiming.clock
      yield
    ensure
      Thread.current[:supervisor_test_inner] = OverheadTiming.clock - start
    end
  end

  class ClientOuter
    def call(_job_class, job, _queue, _redis_pool = nil)
      Thread.current[:supervisor_test_client_inner] = 0.0
      start = OverheadTiming.clock
      yield
    ensure
      OverheadTiming.record("client", job["jid"], OverheadTiming.clock - start - Thread.current[:supervisor_test_client_inner])
    end
  end

  class ClientInner
    def call(*)
      start = OverheadTiming.clock
      yield
    ensure
      Thread.current[:supervisor_test_client_inner] = OverheadTiming.clock - start
    end
  end

  def self.wrap_client(config)
    config.client_middleware do |chain|
      chain.insert_before(SidekiqSupervisor::ClientMiddleware, ClientOuter)
      chain.insert_after(SidekiqSupervisor::ClientMiddleware, ClientInner)
    end
  end

  def self.timed_death_handler
    lambda do |job, exception|
      start = clock
      begin
        SidekiqSupervisor::DEATH_HANDLER.call(job, exception)
      ensure
        record("death", job["jid"], clock - start)
      end
    end
  end
end

Sidekiq.configure_client { |config| OverheadTiming.wrap_client(config) }
Sidekiq.configure_server do |config|
  OverheadTiming.wrap_client(config)
  config.server_middleware do |chain|
    chain.insert_before(SidekiqSupervisor::ServerMiddleware, OverheadTiming::ServerOuter)
    chain.insert_after(SidekiqSupervisor::ServerMiddleware, OverheadTiming::ServerInner)
  end
  handlers = config.death_handlers
  index = handlers.index(SidekiqSupervisor::DEATH_HANDLER)
  handlers[index] = OverheadTiming.timed_death_handler if index
end
