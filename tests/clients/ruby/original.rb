# frozen_string_literal: true

# Loads the original Faraday middleware (original_middleware.rb, verbatim) into the real-Sidekiq test
# app: SIDEKIQ_TEST_REQUIRE=tests/clients/ruby/original.rb. It reads SIDEDIQ_SUPERVISOR_HOST (client,
# the original's spelling) and SIDEKIQ_SUPERVISOR_HOST (server).
require "faraday"
require_relative "original_middleware"
