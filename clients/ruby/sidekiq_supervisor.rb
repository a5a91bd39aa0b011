# frozen_string_literal: true

# Sidekiq Supervisor's middleware: reports each job's lifecycle (scheduled, queued, started,
# complete, failed, dead) to the supervisor's POST /api/v1/events. Ruby's standard library only;
# Sidekiq 6, 7 and 8. It never fails, slows or blocks a job when the supervisor is down or hung.
#
#   require "sidekiq_supervisor"
#   SidekiqSupervisor.install!   # SIDEKIQ_SUPERVISOR_URL, SIDEKIQ_SUPERVISOR_TOKEN, ... (README.md)

require "json"
require "logger"
require "net/http"
require "sidekiq"
require "socket"
require "uri"

module SidekiqSupervisor
  VERSION = "1.0.0"
  EVENTS_PATH = "/api/v1/events"
  MAX_BATCH_EVENTS = 1000 # what the service accepts per request (SUPERVISOR_MAX_BATCH_EVENTS)
  MAX_NAME_CHARS = 255 # job_class, queue, process, error_class
  MAX_ERROR_MESSAGE_CHARS = 10_000

  # Settings: from ENV first, then SidekiqSupervisor.configure { |c| ... } or install! { |c| ... }.
  class Configuration
    MODES = %i[background inline off].freeze
    NUMBERS = {
      open_timeout_seconds: 1.0, # connecting to the supervisor
      read_timeout_seconds: 2.0, # waiting for its answer (also the write timeout)
      flush_interval_seconds: 1.0, # the sender gathers events this long before a request
      shutdown_timeout_seconds: 2.0, # at exit, how long to keep delivering what is buffered
      max_backoff_seconds: 30.0, # longest wait between retries while the supervisor is down
      inline_pause_seconds: 5.0, # inline mode: after a failure, events are dropped this long
      log_interval_seconds: 60.0, # the same kind of warning is logged at most this often
      buffer_size: 10_000, # events held in memory; when full the oldest is dropped
      batch_size: 500, # events per request (at most MAX_BATCH_EVENTS)
      max_batch_bytes: 512 * 1024 # request body size (the service's limit is 1 MiB)
    }.freeze

    attr_accessor :url, :token, :mode, :logger, *NUMBERS.keys

    def initialize(env = ENV)
      @url = present(env["SIDEKIQ_SUPERVISOR_URL"]) || present(env["SIDEKIQ_SUPERVISOR_HOST"])
      @token = present(env["SIDEKIQ_SUPERVISOR_TOKEN"])
      @mode = (present(env["SIDEKIQ_SUPERVISOR_MODE"]) || "background").to_sym
      @logger = nil
      NUMBERS.each do |name, default|
        raw = present(env["SIDEKIQ_SUPERVISOR_#{name.upcase}"])
        value = raw && (default.is_a?(Integer) ? Integer(raw, exception: false) : Float(raw, exception: false))
        instance_variable_set(:"@#{name}", value || default)
        warn_later("SIDEKIQ_SUPERVISOR_#{name.upcase}=#{raw.inspect} is not a number; using #{default}") if raw && !value
      end
    end

    # Bad values are logged and replaced by defaults: monitoring must never stop the app booting.
    def validated
      unless MODES.include?(@mode)
        warn_later("mode #{@mode.inspect} is not one of #{MODES.inspect}; using :background")
        @mode = :background
      end
      NUMBERS.each do |name, default|
        value = public_send(name)
        next if value.is_a?(Numeric) && value > 0

        warn_later("#{name} must be a positive number, got #{value.inspect}; using #{default}")
        public_send(:"#{name}=", default)
      end
      @batch_size = @batch_size.clamp(1, MAX_BATCH_EVENTS)
      @url = nil if @url && !valid_url?(@url)
      self
    end

    def enabled?
      !@url.nil? && @mode != :off
    end

    def events_uri
      URI.parse(@url.to_s.chomp("/") + EVENTS_PATH)
    end

    def log
      @logger || (Sidekiq.respond_to?(:logger) && Sidekiq.logger) || (@fallback_logger ||= Logger.new($stderr))
    end

    def take_warnings
      (@warnings || []).tap { @warnings = [] }
    end

    private

    def present(value)
      value.nil? || value.strip.empty? ? nil : value.strip
    end

    def valid_url?(url)
      uri = URI.parse(url)
      return true if %w[http https].include?(uri.scheme) && uri.host

      warn_later("SIDEKIQ_SUPERVISOR_URL #{url.inspect} is not an http(s) URL; not reporting")
      false
    rescue URI::InvalidURIError
      warn_later("SIDEKIQ_SUPERVISOR_URL #{url.inspect} is not a URL; not reporting")
      false
    end

    def warn_later(message)
      (@warnings ||= []) << message
    end
  end

  # Logs a kind of message at most once per interval, saying how many were held back.
  class Throttle
    def initialize(config)
      @config = config
      @last = {}
      @held = Hash.new(0)
      @lock = Mutex.new
    end

    def log(kind, level, message)
      now = SidekiqSupervisor.monotonic
      held = @lock.synchronize do
        last = @last[kind]
        if last && now - last < @config.log_interval_seconds
          @held[kind] += 1
          return
        end
        @last[kind] = now
        @held.delete(kind) || 0
      end
      suffix = held.positive? ? " (#{held} similar messages not logged)" : ""
      @config.log.public_send(level, "sidekiq-supervisor: #{message}#{suffix}")
    rescue StandardError
      nil
    end
  end

  # One keep-alive HTTP connection to POST /api/v1/events with the short timeouts.
  class Transport
    def initialize(config)
      @config = config
      @uri = config.events_uri
      @headers = {"Content-Type" => "application/json", "User-Agent" => "sidekiq-supervisor-ruby/#{VERSION}"}
      @headers["Authorization"] = "Bearer #{config.token}" if config.token
    end

    # The response; raises on connection errors and timeouts (after closing the connection).
    def post(body)
      request = Net::HTTP::Post.new(@uri.request_uri, @headers)
      request.body = body
      connection.request(request)
    rescue StandardError
      close
      raise
    end

    def close
      @http&.finish if @http&.started?
    rescue StandardError
      nil
    ensure
      @http = nil
    end

    private

    def connection
      return @http if @http&.started?

      http = Net::HTTP.new(@uri.host, @uri.port)
      http.use_ssl = @uri.scheme == "https"
      http.open_timeout = @config.open_timeout_seconds
      http.ssl_timeout = @config.open_timeout_seconds
      http.read_timeout = @config.read_timeout_seconds
      http.write_timeout = @config.read_timeout_seconds if http.respond_to?(:write_timeout=)
      http.max_retries = 0 if http.respond_to?(:max_retries=)
      http.start
      @http = http
    end
  end

  # What an answer means for the events it carried.
  module Answer
    RETRY_STATUSES = [408, 425, 429].freeze

    def self.classify(response)
      code = response.code.to_i
      return :sent if code.between?(200, 299)
      return :retry if code >= 500 || RETRY_STATUSES.include?(code)

      :rejected
    end

    def self.retry_after(response)
      value = response["Retry-After"].to_s
      value.match?(/\A\d+\z/) ? value.to_i : nil
    end

    # What a 422 names: {"[3].job_id" => "is required"} or {"events" => "at most 100 events ..."}.
    def self.fields(response)
      fields = JSON.parse(response.body.to_s)["fields"]
      fields.is_a?(Hash) ? fields : {}
    rescue StandardError
      {}
    end

    # The indexes of the elements named, so the others can still be sent.
    def self.bad_indexes(fields)
      fields.keys.filter_map { |key| key[/\A\[(\d+)\]/, 1]&.to_i }.uniq
    end

    def self.describe(response)
      "HTTP #{response.code} #{response.body.to_s[0, 300]}"
    end
  end

  # The default: job threads append to a bounded buffer; one thread per process sends batches.
  class BackgroundReporter
    attr_reader :pid

    def initialize(config)
      @config = config
      @pid = Process.pid
      @lock = Mutex.new
      @wakeup = ConditionVariable.new # events arrived (or stop)
      @stopped = ConditionVariable.new # stop (interrupts a backoff)
      @buffer = []
      @stats = Hash.new(0)
      @stopping = false
      @deadline = nil
      @thread = nil
      @throttle = Throttle.new(config)
      @max_batch_bytes = config.max_batch_bytes # both shrink if the service says they are too big
      @batch_size = config.batch_size
    end

    # Never blocks on I/O: a mutex, an append, maybe a signal.
    def report(event)
      @lock.synchronize do
        if @stopping
          @stats[:dropped] += 1
          return
        end
        if @buffer.size >= @config.buffer_size
          @buffer.shift
          @stats[:dropped] += 1
        end
        @buffer << event
        @wakeup.signal if @buffer.size == 1 || @buffer.size >= @batch_size
        start_sender unless @thread&.alive?
      end
    end

    # Delivers what is buffered within `timeout` seconds; what is left is counted as dropped.
    def shutdown(timeout = @config.shutdown_timeout_seconds)
      thread = @lock.synchronize do
        @stopping = true
        @deadline = SidekiqSupervisor.monotonic + timeout
        @wakeup.broadcast
        @stopped.broadcast
        start_sender if !@buffer.empty? && !@thread&.alive?
        @thread
      end
      thread&.join(timeout)
      left = @lock.synchronize { @buffer.size.tap { @stats[:dropped] += @buffer.size; @buffer.clear } }
      @config.log.warn("sidekiq-supervisor: #{left} events not delivered at exit (#{@last_error})") if left.positive?
      left.zero?
    rescue StandardError
      false
    end

    def stats
      @lock.synchronize { @stats.merge(buffered: @buffer.size, mode: :background) }
    end

    private

    def start_sender
      @thread = Thread.new { run }
      @thread.name = "sidekiq-supervisor" if @thread.respond_to?(:name=)
      @thread.report_on_exception = false
    end

    def run
      transport = Transport.new(@config)
      failures = 0
      while (batch = next_batch)
        outcome, wait = deliver(transport, batch)
        failures = outcome == :retry ? failures + 1 : 0
        pause(backoff(failures, wait)) if outcome == :retry
        log_drops
      end
    rescue Exception => e # rubocop:disable Lint/RescueException -- the sender never kills the process
      @throttle.log(:crash, :error, "sender stopped (#{e.class}: #{e.message}); it restarts with the next event")
    ensure
      transport&.close
    end

    # The next events to send: waits for the first, then up to flush_interval for more.
    def next_batch
      @lock.synchronize do
        while @buffer.empty?
          return nil if @stopping

          @wakeup.wait(@lock)
        end
        return nil if @stopping && SidekiqSupervisor.monotonic > @deadline

        gather_more unless @stopping
        @buffer.shift(@batch_size)
      end
    end

    def gather_more
      until_time = SidekiqSupervisor.monotonic + @config.flush_interval_seconds
      while @buffer.size < @batch_size && !@stopping
        left = until_time - SidekiqSupervisor.monotonic
        break if left <= 0

        @wakeup.wait(@lock, left)
      end
    end

    # :sent, :rejected, or [:retry, seconds the supervisor asked for]; requeues what to retry.
    def deliver(transport, events)
      bodies = encode(events)
      response = transport.post(bodies.map(&:last).join(",").prepend("[") << "]")
      sent = bodies.map(&:first)
      case Answer.classify(response)
      when :sent then sent_ok(sent.size)
      when :retry then requeue(sent, Answer.describe(response), Answer.retry_after(response))
      else rejected(sent, response)
      end
    rescue StandardError => e
      requeue(events, "#{e.class}: #{e.message}", nil)
    end

    # [event, json] pairs that fit max_batch_bytes (at least one); the rest go back to the buffer.
    def encode(events)
      pairs = []
      size = 2
      events.each_with_index do |event, index|
        json = JSON.generate(event)
        if pairs.any? && size + json.bytesize + 1 > @max_batch_bytes
          put_back(events[index..])
          break
        end
        pairs << [event, json]
        size += json.bytesize + 1
      end
      pairs
    end

    def sent_ok(count)
      @lock.synchronize { @stats[:sent] += count }
      [:sent, nil]
    end

    def requeue(events, message, retry_after)
      @last_error = message
      @lock.synchronize { @stats[:failed_requests] += 1 }
      @throttle.log(:retry, :warn, "cannot deliver #{events.size} events to #{@config.url} (#{message}); retrying")
      put_back(events)
      [:retry, retry_after]
    end

    # A 4xx is never retried as is: a 422 naming elements drops just those; a 413 (or a 422 about
    # the number of events) halves the batches and sends the same events again.
    def rejected(events, response)
      code = response.code.to_i
      fields = code == 422 ? Answer.fields(response) : {}
      bad = Answer.bad_indexes(fields)
      keep = if bad.any? && bad.size < events.size
        events.reject.with_index { |_, index| bad.include?(index) }
      elsif (code == 413 || fields.key?("events")) && events.size > 1
        @max_batch_bytes = [@max_batch_bytes / 2, 16 * 1024].max if code == 413
        @batch_size = [events.size / 2, 1].max if code == 422
        events
      else
        []
      end
      dropped = events.size - keep.size
      @lock.synchronize { @stats[:rejected] += dropped }
      @throttle.log(:rejected, :error, "the supervisor refused #{dropped} events: #{Answer.describe(response)}") if dropped.positive?
      put_back(keep) if keep.any?
      [:rejected, nil]
    end

    # Back to the front of the buffer, keeping it bounded: the oldest events are dropped first.
    def put_back(events)
      @lock.synchronize do
        @buffer.unshift(*events)
        overflow = @buffer.size - @config.buffer_size
        if overflow.positive?
          @buffer.shift(overflow)
          @stats[:dropped] += overflow
        end
      end
    end

    def backoff(failures, retry_after)
      return 0.1 if @stopping # at exit: try again at once, until the deadline

      exponential = [0.5 * 2**[failures - 1, 10].min, @config.max_backoff_seconds].min
      wait = retry_after ? retry_after.clamp(0.5, @config.max_backoff_seconds) : exponential
      wait * (0.8 + rand * 0.4)
    end

    def pause(seconds)
      @lock.synchronize do
        until_time = SidekiqSupervisor.monotonic + seconds
        loop do
          left = until_time - SidekiqSupervisor.monotonic
          break if left <= 0 || (@stopping && seconds > 0.1)

          @stopped.wait(@lock, left)
        end
      end
    end

    def log_drops
      dropped = @lock.synchronize { @stats[:dropped] }
      return if dropped == @logged_drops.to_i

      @logged_drops = dropped
      @throttle.log(:dropped, :warn, "#{dropped} events dropped so far (buffer of #{@config.buffer_size} full: #{@last_error})")
    end
  end

  # mode :inline: each event is posted in the job's thread, with the short timeouts. After a
  # failure nothing is sent for inline_pause_seconds, so a hung supervisor costs one timeout.
  class InlineReporter
    attr_reader :pid

    def initialize(config)
      @config = config
      @pid = Process.pid
      @lock = Mutex.new
      @stats = Hash.new(0)
      @paused_until = 0.0
      @throttle = Throttle.new(config)
      @key = :"sidekiq_supervisor_transport_#{object_id}"
    end

    def report(event)
      if SidekiqSupervisor.monotonic < @paused_until
        count(:dropped)
        return
      end
      response = transport.post(JSON.generate([event]))
      case Answer.classify(response)
      when :sent then count(:sent)
      when :retry then failed(Answer.describe(response))
      else
        count(:rejected)
        @throttle.log(:rejected, :error, "the supervisor refused an event: #{Answer.describe(response)}")
      end
    rescue StandardError => e
      failed("#{e.class}: #{e.message}")
    end

    def shutdown(_timeout = nil)
      transport.close
      true
    end

    def stats
      @lock.synchronize { @stats.merge(buffered: 0, mode: :inline) }
    end

    private

    def transport
      Thread.current[@key] ||= Transport.new(@config)
    end

    def failed(message)
      @paused_until = SidekiqSupervisor.monotonic + @config.inline_pause_seconds
      count(:dropped)
      count(:failed_requests)
      @throttle.log(:failed, :warn, "cannot deliver to #{@config.url}: #{message}; " \
        "dropping events for #{@config.inline_pause_seconds} s")
    end

    def count(name)
      @lock.synchronize { @stats[name] += 1 }
    end
  end

  # Reports nothing: no URL, or mode :off.
  class NullReporter
    attr_reader :pid

    def initialize
      @pid = Process.pid
    end

    def report(_event) = nil

    def shutdown(_timeout = nil) = true

    def stats = {mode: :off, buffered: 0}
  end

  # What one run of a job reports: the started event's time and the job's context.
  Run = Struct.new(:base, :started_at) do
    def event(name, extra = nil)
      event = base.merge(event: name, at: SidekiqSupervisor.now)
      event[:started_at] = started_at if started_at
      extra ? event.merge!(extra) : event
    end
  end

  # Client middleware: `queued`, or `scheduled` (perform_in/perform_at) with scheduled_at.
  class ClientMiddleware
    include Sidekiq::ClientMiddleware if defined?(Sidekiq::ClientMiddleware)

    def call(_job_class, job, queue, _redis_pool = nil)
      pushed = yield
      SidekiqSupervisor.job_pushed(job, queue) if pushed
      pushed
    end
  end

  # Server middleware: `started`, then `complete`, or `failed` and the exception re-raised.
  class ServerMiddleware
    include Sidekiq::ServerMiddleware if defined?(Sidekiq::ServerMiddleware)

    def call(_job_instance, job, queue)
      run = SidekiqSupervisor.job_started(job, queue)
      begin
        result = yield
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported, then re-raised as is
        SidekiqSupervisor.job_failed(run, e)
        raise e
      end
      SidekiqSupervisor.job_complete(run)
      result
    end
  end

  # Sidekiq calls death handlers with (job, exception) when a job runs out of retries.
  DEATH_HANDLER = ->(job, exception) { SidekiqSupervisor.job_died(job, exception) }

  @config = Configuration.new
  @reporter = nil
  @lock = Mutex.new
  @at_exit = false

  class << self
    def config
      @config
    end

    # Changes settings; call before the first job (a running sender is replaced).
    def configure
      yield @config
      replace_reporter
      @config
    end

    # Registers the client middleware (for both clients and servers, so jobs pushed from jobs
    # and by Sidekiq's scheduler and retry poller are reported), the server middleware, the
    # death handler, and a flush at exit. Returns false (and logs why) when not configured.
    def install!(&block)
      configure(&block) if block
      @config.validated
      flush_warnings
      unless @config.enabled?
        @config.log.warn("sidekiq-supervisor: set SIDEKIQ_SUPERVISOR_URL to report jobs; not reporting")
        return false
      end
      Sidekiq.configure_client { |config| add_client_middleware(config) }
      Sidekiq.configure_server { |config| install_server(config) }
      install_at_exit
      true
    end

    # What install! does in configure_server, for a config it does not reach, e.g. Sidekiq 7's
    # embedded mode: Sidekiq.configure_embed { |config| SidekiqSupervisor.install_server(config) }.
    def install_server(config)
      add_client_middleware(config)
      config.server_middleware { |chain| chain.prepend(ServerMiddleware) }
      config.death_handlers << DEATH_HANDLER unless config.death_handlers.include?(DEATH_HANDLER)
      install_at_exit
      config
    end

    # Sends what is buffered (at most `timeout` seconds); run at exit by install!.
    def shutdown(timeout = @config.shutdown_timeout_seconds)
      reporter = @reporter
      return true unless reporter && reporter.pid == Process.pid

      reporter.shutdown(timeout)
    end

    # Counters of this process: sent, dropped, rejected, failed_requests, buffered.
    def stats
      reporter.stats
    end

    def job_pushed(job, queue)
      at = job["at"]
      event = base_event(job, queue)
      event[:event] = at ? "scheduled" : "queued"
      event[:at] = now
      event[:scheduled_at] = at if at
      reporter.report(event)
    rescue StandardError => e
      internal_error(e)
    end

    def job_started(job, queue)
      base = base_event(job, queue)
      base[:process] = identity
      base[:enqueued_at] = job["enqueued_at"] if job["enqueued_at"].is_a?(Numeric)
      run = Run.new(base, nil)
      started = run.event("started")
      run.started_at = started[:at]
      reporter.report(started)
      run
    rescue StandardError => e
      internal_error(e)
    end

    def job_complete(run)
      reporter.report(run.event("complete")) if run
    rescue StandardError => e
      internal_error(e)
    end

    def job_failed(run, exception)
      return if run.nil? || shutdown_exception?(exception)

      reporter.report(run.event("failed", error_of(exception)))
    rescue StandardError => e
      internal_error(e)
    end

    def job_died(job, exception)
      event = base_event(job, job["queue"])
      event.delete(:retry_count) # Sidekiq counted the failure already; `failed` said which run it was
      event.merge!(event: "dead", at: now, process: identity, **error_of(exception))
      event[:enqueued_at] = job["enqueued_at"] if job["enqueued_at"].is_a?(Numeric)
      reporter.report(event)
    rescue StandardError => e
      internal_error(e)
    end

    # Epoch seconds with microseconds.
    def now
      Process.clock_gettime(Process::CLOCK_REALTIME, :microsecond) / 1_000_000.0
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # The Sidekiq process identity ("host:pid:nonce"), or "host:pid" outside a Sidekiq server.
    def identity
      return @identity if @identity_pid == Process.pid

      @identity_pid = Process.pid
      @identity = sidekiq_identity || "#{Socket.gethostname}:#{Process.pid}"
    end

    private

    # This process's reporter; a forked child gets its own (an empty buffer and a new thread).
    def reporter
      current = @reporter
      return current if current && current.pid == Process.pid

      @lock.synchronize do
        @reporter = build_reporter if @reporter.nil? || @reporter.pid != Process.pid
        @reporter
      end
    end

    def build_reporter
      @config.validated
      flush_warnings
      return NullReporter.new unless @config.enabled?

      @config.mode == :inline ? InlineReporter.new(@config) : BackgroundReporter.new(@config)
    end

    def replace_reporter
      old = @lock.synchronize { @reporter.tap { @reporter = nil } }
      old.shutdown(0) if old && old.pid == Process.pid
    end

    def add_client_middleware(config)
      config.client_middleware { |chain| chain.add(ClientMiddleware) }
    end

    def install_at_exit
      return if @at_exit

      @at_exit = true
      at_exit { SidekiqSupervisor.shutdown }
    end

    def base_event(job, queue)
      event = {
        job_id: job["jid"],
        job_class: name_of(job["wrapped"] || job["class"]),
        queue: name_of(queue || job["queue"]),
        arguments: arguments_of(job["args"])
      }
      event[:retry_count] = job["retry_count"] if job["retry_count"].is_a?(Integer)
      event
    end

    def error_of(exception)
      {error_class: name_of(exception.class.name), error_message: text(exception.message.to_s, MAX_ERROR_MESSAGE_CHARS)}
    rescue StandardError
      {error_class: name_of(exception.class.name), error_message: "(the message raised an error)"}
    end

    def arguments_of(args)
      JSON.generate(args || [])
    rescue StandardError
      nil # not JSON-able: Sidekiq will refuse the push itself
    end

    def name_of(value)
      value.nil? ? nil : text(value.to_s, MAX_NAME_CHARS)
    end

    def text(value, limit)
      value = value.encode(Encoding::UTF_8, invalid: :replace, undef: :replace) unless value.encoding == Encoding::UTF_8 && value.valid_encoding?
      value.length > limit ? value[0, limit] : value
    end

    def shutdown_exception?(exception)
      return false unless defined?(Sidekiq::Shutdown)

      seen = 0
      while exception && seen < 10
        return true if exception.is_a?(Sidekiq::Shutdown)

        exception = exception.cause
        seen += 1
      end
      false
    end

    def sidekiq_identity
      helper = if defined?(Sidekiq::Component) then Sidekiq::Component
      elsif defined?(Sidekiq::Util) then Sidekiq::Util
      end
      helper && Object.new.extend(helper).identity
    rescue StandardError
      nil
    end

    def internal_error(error)
      @throttle ||= Throttle.new(@config)
      @throttle.log(:internal, :error, "could not report an event (#{error.class}: #{error.message})")
      nil
    end

    def flush_warnings
      @config.take_warnings.each { |message| @config.log.warn("sidekiq-supervisor: #{message}") }
    end
  end
end
