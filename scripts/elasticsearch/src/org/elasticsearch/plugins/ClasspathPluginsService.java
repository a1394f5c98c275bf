/*
 * The plugins service of the local stack's Elasticsearch node: the server's modules are not unpacked in a
 * distribution's modules/ directory but are jars on the class path (Maven Central publishes the server and the
 * transport-netty4 module, which the HTTP layer needs). Modelled on codelibs' elasticsearch-cluster-runner
 * (ClusterRunnerPluginsService, Apache License 2.0), which is not on Maven Central for 8.x.
 */
package org.elasticsearch.plugins;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;

import org.elasticsearch.Version;
import org.elasticsearch.action.admin.cluster.node.info.PluginsAndModules;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.jdk.ModuleQualifiedExportsService;

public class ClasspathPluginsService extends PluginsService {

    private final List<LoadedPlugin> loaded;

    private final PluginsAndModules info;

    public ClasspathPluginsService(Settings settings, Environment environment,
            Collection<Class<? extends Plugin>> classpathPlugins) {
        super(settings, environment.configFile(), environment.modulesFile(), environment.pluginsFile());
        List<LoadedPlugin> plugins = new ArrayList<>();
        for (Class<? extends Plugin> pluginClass : classpathPlugins) {
            Plugin plugin = loadPlugin(pluginClass, settings, environment.configFile());
            PluginDescriptor descriptor = new PluginDescriptor(pluginClass.getName(), "classpath module", "NA",
                    Version.CURRENT.toString(), Integer.toString(Runtime.version().feature()),
                    pluginClass.getName(), null, List.of(), false, false, false, false);
            plugins.add(new LoadedPlugin(descriptor, plugin));
        }
        List<PluginRuntimeInfo> infos = new ArrayList<>(super.info().getPluginInfos());
        plugins.stream().map(LoadedPlugin::descriptor).map(PluginRuntimeInfo::new).forEach(infos::add);
        loadExtensions(plugins);
        plugins.addAll(super.plugins());
        this.loaded = List.copyOf(plugins);
        this.info = new PluginsAndModules(infos, super.info().getModuleInfos());
    }

    @Override
    protected final List<LoadedPlugin> plugins() {
        return loaded;
    }

    @Override
    public PluginsAndModules info() {
        return info;
    }

    @Override
    protected void addServerExportsService(Map<String, List<ModuleQualifiedExportsService>> qualifiedExports) {
        // the server runs on the class path, not as a module layer: nothing to export
    }
}
