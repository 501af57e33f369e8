package lagbalance.peer;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.Cluster;
import org.apache.kafka.common.Configurable;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A Java group member that writes the ownership-audit lines of {@code assignor/examples/worker.rs}
 * (read by {@code integration/src/audit.rs}), so a group mixing our workers with Java consumers
 * can be audited.
 *
 * <pre>
 * AuditConsumer --bootstrap HOST:PORT --group G --topic T --name NAME --audit PATH
 *               [--assignor cooperative-sticky|sticky|range|roundrobin] [--session-timeout-ms N]
 *               [--instance-id ID] [--delay-ms N] [--commit-interval-ms N]
 *               [--group-protocol classic|consumer]
 * </pre>
 *
 * <p>Classic group protocol, auto-commit off: the offsets of the records it has processed are
 * committed every {@code --commit-interval-ms} (default 1000) and, synchronously, for the
 * partitions revoked in {@code onPartitionsRevoked}. Audit lines are flushed after every batch
 * and in every rebalance callback, before any commit; {@code started} / {@code stopping} lines
 * mark when it subscribed and when it began a clean shutdown. SIGTERM / SIGINT: finish the
 * batch, close the consumer (revoke with commit, LeaveGroup unless static) and exit 0.
 */
public final class AuditConsumer {
  /** Set by SIGTERM / SIGINT. */
  private static volatile boolean stopping;

  private final BufferedWriter audit;
  private final String member;
  /** Next offset to commit per partition: one past the last record processed. */
  private final Map<TopicPartition, OffsetAndMetadata> processed = new HashMap<>();

  private AuditConsumer(BufferedWriter audit, String member) {
    this.audit = audit;
    this.member = member;
  }

  public static void main(String[] argv) throws Exception {
    System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
    Map<String, String> args = parse(argv);
    String name = args.get("--name");
    String assignor = args.getOrDefault("--assignor", "cooperative-sticky");
    long delayMs = Long.parseLong(args.getOrDefault("--delay-ms", "0"));
    long commitIntervalMs = Long.parseLong(args.getOrDefault("--commit-interval-ms", "1000"));

    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("--bootstrap"));
    p.put(ConsumerConfig.GROUP_ID_CONFIG, args.get("--group"));
    // `consumer` is KIP-848's broker-side protocol: the broker assigns, no client assignor and
    // no client session settings.
    String protocol = args.getOrDefault("--group-protocol", "classic");
    boolean classic = protocol.equals("classic");
    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    if (classic) {
      p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, LeaderNoting.class.getName());
      p.put(LeaderNoting.INNER, assignorClass(assignor));
    }
    if (classic && args.containsKey("--session-timeout-ms")) {
      long ms = Long.parseLong(args.get("--session-timeout-ms"));
      p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, Long.toString(ms));
      // As the worker does: a heartbeat every third of the session.
      p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, Long.toString(Math.max(100, ms / 3)));
    }
    if (args.containsKey("--instance-id")) {
      p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, args.get("--instance-id"));
    }

    // Our own handler instead of the JVM's (which would exit 143 after the shutdown hooks):
    // the poll loop sees the flag within one short poll and closes the consumer itself.
    // sun.misc.Signal is in jdk.unsupported, kept for exactly this (JEP 260).
    sun.misc.SignalHandler onStop = sig -> stopping = true;
    sun.misc.Signal.handle(new sun.misc.Signal("TERM"), onStop);
    sun.misc.Signal.handle(new sun.misc.Signal("INT"), onStop);

    BufferedWriter out =
        Files.newBufferedWriter(Paths.get(args.get("--audit")), StandardCharsets.UTF_8);
    AuditConsumer self = new AuditConsumer(out, name);
    long total = 0;
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
      consumer.subscribe(List.of(args.get("--topic")), self.listener(consumer));
      // The audit counts a member live from `started` to `stopping` (or its last line).
      self.event("started");
      long nextCommit = System.currentTimeMillis() + commitIntervalMs;
      int lastGeneration = -1;
      boolean lastLeader = false;
      while (!stopping) {
        ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
        for (ConsumerRecord<byte[], byte[]> r : records) {
          if (delayMs > 0) {
            Thread.sleep(delayMs);
          }
          self.line(String.format(
              "\"event\":\"consumed\",\"topic\":%s,\"partition\":%d,\"offset\":%d",
              quote(r.topic()), r.partition(), r.offset()));
          self.processed.put(new TopicPartition(r.topic(), r.partition()),
              new OffsetAndMetadata(r.offset() + 1));
        }
        self.flush();
        total += records.count();
        if (LeaderNoting.generation != lastGeneration || LeaderNoting.leader != lastLeader) {
          lastGeneration = LeaderNoting.generation;
          lastLeader = LeaderNoting.leader;
          self.line(String.format("\"event\":\"role\",\"leader\":%b,\"generation\":%d",
              lastLeader, lastGeneration));
          self.flush();
        }
        if (System.currentTimeMillis() >= nextCommit) {
          nextCommit = System.currentTimeMillis() + commitIntervalMs;
          self.commit(consumer, consumer.assignment());
        }
      }
      System.err.printf("[%s] closing after %d records%n", name, total);
      self.event("stopping");
      consumer.close(CloseOptions.timeout(Duration.ofSeconds(10)));
    } finally {
      self.flush();
      out.close();
    }
    System.exit(0);
  }

  private ConsumerRebalanceListener listener(KafkaConsumer<byte[], byte[]> consumer) {
    return new ConsumerRebalanceListener() {
      @Override
      public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
        ownership("revoked", partitions);
        commit(consumer, partitions);
        partitions.forEach(processed::remove);
      }

      @Override
      public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
        ownership("assigned", partitions);
      }

      @Override
      public void onPartitionsLost(Collection<TopicPartition> partitions) {
        // Someone else may own them already: nothing to commit.
        ownership("lost", partitions);
        partitions.forEach(processed::remove);
      }
    };
  }

  /** Commit what was processed of {@code partitions}; a failure is logged, not fatal. */
  private void commit(KafkaConsumer<byte[], byte[]> consumer, Collection<TopicPartition> partitions) {
    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
    for (TopicPartition tp : partitions) {
      OffsetAndMetadata o = processed.get(tp);
      if (o != null) {
        offsets.put(tp, o);
      }
    }
    if (offsets.isEmpty()) {
      return;
    }
    try {
      consumer.commitSync(offsets, Duration.ofSeconds(5));
    } catch (KafkaException e) {
      System.err.printf("[%s] commit failed: %s%n", member, e);
    }
  }

  private void event(String event) {
    line(String.format("\"event\":\"%s\"", event));
    flush();
  }

  private void ownership(String event, Collection<TopicPartition> partitions) {
    List<String> parts = new ArrayList<>();
    for (TopicPartition tp : partitions) {
      parts.add("[" + quote(tp.topic()) + "," + tp.partition() + "]");
    }
    line(String.format("\"event\":\"%s\",\"partitions\":[%s]", event, String.join(",", parts)));
    flush();
    System.err.printf("[%s] %s %s%n", member, event, partitions);
  }

  /** One audit line: {@code ts_ms} (wall clock) and {@code member}, then {@code fields}. */
  private void line(String fields) {
    try {
      audit.write(String.format("{\"ts_ms\":%d,\"member\":%s,%s}%n",
          System.currentTimeMillis(), quote(member), fields));
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  private void flush() {
    try {
      audit.flush();
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }

  static String assignorClass(String name) {
    switch (name) {
      case "cooperative-sticky":
        return "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";
      case "sticky":
        return "org.apache.kafka.clients.consumer.StickyAssignor";
      case "range":
        return "org.apache.kafka.clients.consumer.RangeAssignor";
      case "roundrobin":
        return "org.apache.kafka.clients.consumer.RoundRobinAssignor";
      default:
        return usage("unknown --assignor " + name);
    }
  }

  static Map<String, String> parse(String[] argv) {
    Set<String> known = Set.of("--bootstrap", "--group", "--topic", "--name", "--audit",
        "--assignor", "--session-timeout-ms", "--instance-id", "--delay-ms",
        "--commit-interval-ms", "--group-protocol");
    Map<String, String> args = new TreeMap<>();
    for (int i = 0; i < argv.length; i += 2) {
      if (!known.contains(argv[i]) || i + 1 >= argv.length) {
        usage("bad argument " + argv[i]);
      }
      args.put(argv[i], argv[i + 1]);
    }
    for (String required : List.of("--bootstrap", "--group", "--topic", "--name", "--audit")) {
      if (!args.containsKey(required)) {
        usage("missing " + required);
      }
    }
    return args;
  }

  static <T> T usage(String why) {
    System.err.println("AuditConsumer: " + why);
    System.err.println("usage: AuditConsumer --bootstrap HOST:PORT --group G --topic T --name NAME"
        + " --audit PATH [--assignor cooperative-sticky|sticky|range|roundrobin]"
        + " [--group-protocol classic|consumer]"
        + " [--session-timeout-ms N] [--instance-id ID] [--delay-ms N] [--commit-interval-ms N]");
    System.exit(2);
    return null;
  }

  /**
   * The configured assignor ({@link #INNER}), noting the generation of each assignment received
   * and whether this member computed it (only the leader does), for the audit's {@code role}
   * lines: the worker writes who leads in which generation.
   */
  public static final class LeaderNoting implements ConsumerPartitionAssignor, Configurable {
    static final String INNER = "lagbalance.peer.assignor.class";
    /** Static: Kafka makes the instance; one consumer per process. */
    static volatile boolean leader;
    static volatile int generation = -1;
    private static volatile boolean assignedThisRound;
    private ConsumerPartitionAssignor inner;

    @Override
    public void configure(Map<String, ?> configs) {
      try {
        inner = (ConsumerPartitionAssignor) Class.forName((String) configs.get(INNER))
            .getDeclaredConstructor().newInstance();
      } catch (ReflectiveOperationException e) {
        throw new KafkaException("assignor " + configs.get(INNER), e);
      }
      if (inner instanceof Configurable) {
        ((Configurable) inner).configure(configs);
      }
    }

    @Override
    public GroupAssignment assign(Cluster metadata, GroupSubscription subscriptions) {
      assignedThisRound = true;
      return inner.assign(metadata, subscriptions);
    }

    @Override
    public void onAssignment(Assignment assignment, ConsumerGroupMetadata metadata) {
      leader = assignedThisRound;
      assignedThisRound = false;
      generation = metadata.generationId();
      inner.onAssignment(assignment, metadata);
    }

    @Override
    public java.nio.ByteBuffer subscriptionUserData(Set<String> topics) {
      return inner.subscriptionUserData(topics);
    }

    @Override
    public List<RebalanceProtocol> supportedProtocols() {
      return inner.supportedProtocols();
    }

    @Override
    public short version() {
      return inner.version();
    }

    @Override
    public String name() {
      return inner.name();
    }
  }
}
