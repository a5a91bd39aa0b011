# frozen_string_literal: true

# Times Sidekiq::Client.push's middleware chain with and without our client middleware, pushes
# interleaved ("on", "off", "on", ...), in one process: prints {"on": [seconds...], "off": [...]}.
# Run by benchmarks/middleware.py with the Sidekiq test app's environment (REDIS_URL, and the
# SIDEKIQ_SUPERVISOR_* settings). BENCH_MIDDLEWARE_PUSHES pushes of each kind; the jobs go to the
# queue "bench-client", which nothing processes.
require "json"
require "logger"
require_relative "../tests/sidekiq/real/app"

# stdout carries the figures; Sidekiq's client logger writes there too.
SidekiqSupervisor.configure { |config| config.logger = Logger.new($stderr) }

module MiddlewareBench
  TIMES = {"on" => [], "off" => []}.freeze

  class ClientTimer
    def call(_job_class, job, _queue, _redis_pool = nil)
      start = MiddlewareBench.clock
      yield
    ensure
      TIMES[MiddlewareBench.flag(job)] << MiddlewareBench.clock - start
    end
  end

  class ClientSwitch
    def call(job_class, job, queue, redis_pool = nil, &block)
      return yield unless MiddlewareBench.flag(job) == "on"

      SidekiqSupervisor::ClientMiddleware.new.call(job_class, job, queue, redis_pool, &block)
    end
  end
end

Sidekiq.configure_client do |config|
  config.client_middleware do |chain|
    chain.add MiddlewareBench::ClientTimer
    chain.add MiddlewareBench::ClientSwitch
  end
end

pushes = Integer(ENV.fetch("BENCH_MIDDLEWARE_PUSHES", "1000"))
(2 * pushes).times do |index|
  Sidekiq::Client.push("class" => "NoopJob", "queue" => "bench-client", "args" => [index.even? ? "on" : "off", index])
end
puts JSON.generate(MiddlewareBench::TIMES)
SidekiqSupervisor.shutdown(0.5) # what is still buffered is not part of the measurement
