# frozen_string_literal: true

# Loads the seed's Faraday middleware (seed_middleware.rb, verbatim) into the real-Sidekiq test
# app: SIDEKIQ_TEST_REQUIRE=tests/clients/ruby/seed.rb. It reads SIDEDIQ_SUPERVISOR_HOST (client,
# the seed's spelling) and SIDEKIQ_SUPERVISOR_HOST (server).
require "faraday"
require_relative "seed_middleware"
