// Readiness probe for scripts/kafka, run in Java's source-launch mode:
//
//   java -cp "<libs>/*" scripts/KafkaReady.java <bootstrap> <expectedBrokers> <timeoutSeconds>
//
// Loops Admin.describeCluster() until at least <expectedBrokers> live brokers
// are registered or the deadline passes. On stdout it prints one line,
//   cluster_id=<id> brokers=<id,id,...>
// with the last state it saw (possibly "cluster_id=- brokers=" when nothing
// answered). Exit 0 when ready, 1 on timeout, 2 on bad arguments. Diagnostics
// go to stderr; client logging is switched off so stdout stays parseable.
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        // Must happen before any Kafka/log4j class is loaded: no log output at all,
        // unless the caller passed its own -Dlog4j2.configurationFile.
        if (System.getProperty("log4j2.configurationFile") == null) {
            System.setProperty("log4j2.level", "OFF");
            System.setProperty("log4j2.statusLoggerLevel", "OFF");
        }
        if (args.length != 3) {
            System.err.println("usage: KafkaReady <bootstrap> <expectedBrokers> <timeoutSeconds>");
            System.exit(2);
        }
        String bootstrap = args[0];
        int expected;
        double timeoutS;
        try {
            expected = Integer.parseInt(args[1]);
            timeoutS = Double.parseDouble(args[2]);
        } catch (NumberFormatException e) {
            System.err.println("KafkaReady: bad number: " + e.getMessage());
            System.exit(2);
            return;
        }
        long deadline = System.nanoTime() + (long) (timeoutS * 1e9);

        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "fanout-kafka-ready");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, "1000");
        p.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MAX_MS_CONFIG, "2000");

        String clusterId = "-";
        List<Integer> ids = Collections.emptyList();
        String lastError = "no answer yet";
        boolean ready = false;

        Admin admin = Admin.create(p);
        try {
            while (true) {
                long remainingMs = (deadline - System.nanoTime()) / 1_000_000L;
                if (remainingMs <= 0) {
                    break;
                }
                int callTimeout = (int) Math.max(200, Math.min(5000, remainingMs));
                try {
                    DescribeClusterResult r =
                        admin.describeCluster(new DescribeClusterOptions().timeoutMs(callTimeout));
                    Collection<Node> nodes = r.nodes().get();
                    String cid = r.clusterId().get();
                    List<Integer> seen = new ArrayList<>();
                    for (Node n : nodes) {
                        seen.add(n.id());
                    }
                    Collections.sort(seen);
                    clusterId = cid == null ? "-" : cid;
                    ids = seen;
                    if (seen.size() >= expected) {
                        ready = true;
                        break;
                    }
                    lastError = seen.size() + " of " + expected + " brokers registered";
                } catch (ExecutionException e) {
                    Throwable c = e.getCause() == null ? e : e.getCause();
                    lastError = c.getClass().getSimpleName() + ": " + c.getMessage();
                }
                long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0) {
                    break;
                }
                Thread.sleep(Math.min(250, left));
            }
        } finally {
            try {
                admin.close(Duration.ofMillis(500));
            } catch (RuntimeException ignored) {
                // closing is best effort
            }
        }

        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ids.size(); i++) {
            if (i > 0) {
                sb.append(',');
            }
            sb.append(ids.get(i));
        }
        System.out.println("cluster_id=" + clusterId + " brokers=" + sb);
        System.out.flush();
        if (!ready) {
            System.err.println("KafkaReady: not ready after " + args[2] + "s (" + lastError + ")");
            System.exit(1);
        }
        System.exit(0);
    }
}
