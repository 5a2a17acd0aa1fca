// Topics and consumer groups on a RocketMQ 5.x broker, through the admin client its own artifacts ship
// (rocketmq-tools). Run with the single-file launcher, the resolved jars on the class path:
//   java -cp 'lib/*' Admin.java NAMESRV BROKER topic NAME | group NAME MAX_RETRIES | offsets TOPIC
//                                              | connections GROUP ...
// One JVM for a list of commands: starting one costs seconds on a small machine.
import java.util.HashMap;
import java.util.Map;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.remoting.protocol.admin.TopicStatsTable;
import org.apache.rocketmq.remoting.protocol.subscription.SubscriptionGroupConfig;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

public class Admin {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Admin NAMESRV BROKER [topic NAME | group NAME MAX_RETRIES | offsets TOPIC | perm TOPIC PERM | connections GROUP]...");
            System.exit(2);
        }
        DefaultMQAdminExt admin = new DefaultMQAdminExt(5000);
        admin.setNamesrvAddr(args[0]);
        admin.setInstanceName("wanhook-admin-" + ProcessHandle.current().pid());
        String broker = args[1];
        admin.start();
        try {
            for (int i = 2; i < args.length; i++) {
                switch (args[i]) {
                    case "topic": {
                        TopicConfig topic = new TopicConfig(args[++i], 4, 4);
                        Map<String, String> attributes = new HashMap<>();
                        attributes.put("+message.type", "NORMAL");
                        topic.setAttributes(attributes);
                        admin.createAndUpdateTopicConfig(broker, topic);
                        // The broker tells the NameServer in the background; a route asked for before that
                        // is answered TOPIC_NOT_FOUND, and the proxy keeps that answer for a while.
                        long deadline = System.currentTimeMillis() + 20_000;
                        while (true) {
                            try {
                                if (!admin.examineTopicRouteInfo(topic.getTopicName()).getQueueDatas().isEmpty()) {
                                    break;
                                }
                            } catch (Exception notYet) {
                                if (System.currentTimeMillis() > deadline) {
                                    throw notYet;
                                }
                            }
                            Thread.sleep(100);
                        }
                        System.out.println("topic " + topic.getTopicName());
                        break;
                    }
                    case "group": {
                        SubscriptionGroupConfig group = new SubscriptionGroupConfig();
                        group.setGroupName(args[++i]);
                        group.setRetryMaxTimes(Integer.parseInt(args[++i]));
                        admin.createAndUpdateSubscriptionGroupConfig(broker, group);
                        System.out.println("group " + group.getGroupName() + " " + group.getRetryMaxTimes());
                        break;
                    }
                    case "offsets": {  // messages ever stored in a topic: the sum of its queues' max offsets
                        String name = args[++i];
                        long total = 0;
                        try {
                            TopicStatsTable stats = admin.examineTopicStats(name);
                            for (var offset : stats.getOffsetTable().values()) {
                                total += offset.getMaxOffset() - offset.getMinOffset();
                            }
                        } catch (Exception absent) {  // a topic not created yet holds nothing
                        }
                        System.out.println("offsets " + name + " " + total);
                        break;
                    }
                    case "perm": {  // e.g. make a %DLQ% topic readable (6) to replay it
                        String name = args[++i];
                        int perm = Integer.parseInt(args[++i]);
                        TopicConfig topic = new TopicConfig(name, 1, 1, perm);
                        admin.createAndUpdateTopicConfig(broker, topic);
                        System.out.println("perm " + name + " " + perm);
                        break;
                    }
                    case "connections": {  // the clients of a consumer group the broker holds (4.x remoting)
                        String group = args[++i];
                        int clients = 0;
                        try {
                            clients = admin.examineConsumerConnectionInfo(group).getConnectionSet().size();
                        } catch (Exception none) {  // CONSUMER_NOT_ONLINE: no client
                        }
                        System.out.println("connections " + group + " " + clients);
                        break;
                    }
                    default:
                        System.err.println("unknown command " + args[i]);
                        System.exit(2);
                }
            }
        } catch (Exception failed) {
            System.err.println("admin: " + failed);
            System.exit(1);
        }
        // Exit without admin.shutdown(): its graceful close of the network threads takes seconds and
        // there is nothing to flush.
        System.exit(0);
    }
}
