# frozen_string_literal: true

# Prints what Sidekiq's own Ruby API reports, as one JSON object on stdout: Sidekiq::Stats,
# Sidekiq::Queue.all, Sidekiq::ProcessSet and Sidekiq::Workers. Read-only: the ProcessSet is
# built with clean_plz = false, so dead processes are not pruned. `before`/`after` (epoch
# seconds) bracket the reads, so a caller can tell when each latency was computed.
require "json"
require "sidekiq/api"
require_relative "app"

before = Time.now.to_f
stats = Sidekiq::Stats.new
report = {
  "stats" => {
    "processed" => stats.processed,
    "failed" => stats.failed,
    "scheduled_size" => stats.scheduled_size,
    "retry_size" => stats.retry_size,
    "dead_size" => stats.dead_size,
    "processes_size" => stats.processes_size,
    "enqueued" => stats.enqueued,
    "workers_size" => stats.workers_size,
    "default_queue_latency" => stats.default_queue_latency
  },
  "queues" => Sidekiq::Queue.all.map { |q| {"name" => q.name, "size" => q.size, "latency" => q.latency} },
  "processes" => Sidekiq::ProcessSet.new(false).map do |process|
    %w[identity hostname pid tag concurrency busy quiet queues labels started_at beat rss]
      .to_h { |field| [field, process[field]] }
  end,
  "workers" => Sidekiq::Workers.new.map do |process, tid, work|
    {
      "process" => process,
      "tid" => tid,
      "jid" => work["payload"]["jid"],
      "class" => work["payload"]["class"],
      "queue" => work["queue"],
      "run_at" => work["run_at"]
    }
  end
}
report["before"] = before
report["after"] = Time.now.to_f
puts JSON.generate(report)
