# frozen_string_literal: true

# Installs clients/ruby/sidekiq_supervisor.rb into the real-Sidekiq test app (tests/sidekiq/real/
# app.rb loads this through SIDEKIQ_TEST_REQUIRE), configured from the SIDEKIQ_SUPERVISOR_* env.
# Also makes Sidekiq's scheduler poll about every second, so scheduled jobs and due retries are
# enqueued within a test's patience (6.4.1 otherwise waits 10-15 s, then ~5 s between polls).
require "logger"
require_relative "../../../clients/ruby/sidekiq_supervisor"

SidekiqSupervisor.install! do |config|
  # enqueue.rb prints the jids on stdout (Sidekiq's client logger): keep our lines off it.
  config.logger = Logger.new($stderr) unless Sidekiq.server?
end

Sidekiq.configure_server { |config| config.options[:poll_interval_average] = 1 }
