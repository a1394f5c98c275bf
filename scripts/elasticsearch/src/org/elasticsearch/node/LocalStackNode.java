/*
 * One Elasticsearch 8 node of the local stack, started from the jars Maven Central publishes (see
 * scripts/install-elasticsearch.sh and docs/local-stack.md). Usage:
 *
 *   java -cp 'classes:libs/*' org.elasticsearch.node.LocalStackNode HOME_DIR
 *
 * HOME_DIR/config/elasticsearch.yml holds the node's settings (written by scripts/elasticsearch.sh). The node
 * runs until SIGTERM, then closes cleanly. Modelled on codelibs' elasticsearch-cluster-runner (ClusterRunnerNode,
 * Apache License 2.0), whose 8.x releases are not on Maven Central.
 */
package org.elasticsearch.node;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.transport.netty4.Netty4Plugin;

public class LocalStackNode extends Node {

    LocalStackNode(Environment environment) {
        super(NodeConstruction.prepareConstruction(environment, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, Settings settings) {
                return new ClasspathPluginsService(settings, env, List.of(Netty4Plugin.class));
            }
        }, true));
    }

    @Override
    protected void configureNodeAndClusterIdStateListener(ClusterService clusterService) {
        // the distribution's bootstrap owns this listener; nothing to do here
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: LocalStackNode HOME_DIR");
            System.exit(64);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Settings input = Settings.builder().put("path.home", home.toString()).build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(input, Map.of(),
                home.resolve("config"), () -> "local-stack");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment, true);
        java.nio.file.Files.createDirectories(environment.modulesFile());
        java.nio.file.Files.createDirectories(environment.pluginsFile());

        LocalStackNode node = new LocalStackNode(environment);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.prepareForClose();
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println("closing the node failed: " + e);
            } finally {
                closed.countDown();
            }
        }, "local-stack-node-close"));
        try {
            node.start();
        } catch (Exception e) {
            System.err.println("the node did not start: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        closed.await();
    }
}
