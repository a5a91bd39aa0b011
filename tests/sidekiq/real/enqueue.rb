# frozen_string_literal: true

# Pushes jobs through Sidekiq::Client, exactly as an app would (client middleware included).
# stdin: a JSON array of Sidekiq::Client.push items, e.g.
#   [{"class": "QuickJob", "queue": "low", "args": [1]}, {"class": "HoldJob", "at": 1.7e9}]
# stdout: a JSON array of the jids, in order.
require "json"
require_relative "app"

items = JSON.parse($stdin.read)
jids = items.map do |item|
  item["at"] = item["at"].to_f if item.key?("at")
  Sidekiq::Client.push(item) or raise "client middleware stopped the push of #{item.inspect}"
end
puts JSON.generate(jids)
