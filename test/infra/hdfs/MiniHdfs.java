// A real HDFS for tests: one NameNode and one DataNode (MiniDFSCluster) with WebHDFS on
// fixed loopback ports. Run as a single source file (no build step):
//   java <add-opens flags> -cp '<hadoop libs>/*' MiniHdfs.java <baseDir> <nnRpcPort> <nnHttpPort> <dnPort> <dnHttpPort> <dnIpcPort> <format:true|false> [key=value…]
// Trailing key=value arguments are set on the Configuration last (HTTPS, delegation tokens: see hdfs.ts).
// inferq.kerberos=true starts a MiniKdc first (its jars must be on the classpath) and secures the
// cluster with Kerberos: RPC and data transfer authenticated, WebHDFS delegation tokens checked.
// Prints "READY <webhdfs url>" once the cluster is active; shuts down on SIGTERM (or stdin EOF).
import java.io.File;
import java.nio.file.Files;
import java.util.Properties;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.security.UserGroupInformation;

public class MiniHdfs {
  public static void main(String[] args) throws Exception {
    String base = args[0];
    int nnRpc = Integer.parseInt(args[1]);
    int nnHttp = Integer.parseInt(args[2]);
    int dn = Integer.parseInt(args[3]);
    int dnHttp = Integer.parseInt(args[4]);
    int dnIpc = Integer.parseInt(args[5]);
    boolean format = Boolean.parseBoolean(args[6]);

    Configuration conf = new HdfsConfiguration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(base).getAbsolutePath());
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.set("hadoop.security.authentication", "simple");
    conf.setInt("dfs.replication", 1);
    conf.set("dfs.namenode.rpc-address", "127.0.0.1:" + nnRpc);
    conf.set("dfs.namenode.http-address", "127.0.0.1:" + nnHttp);
    conf.set("dfs.datanode.address", "127.0.0.1:" + dn);
    conf.set("dfs.datanode.http.address", "127.0.0.1:" + dnHttp);
    conf.set("dfs.datanode.ipc.address", "127.0.0.1:" + dnIpc);
    conf.set("dfs.datanode.hostname", "127.0.0.1");
    conf.setBoolean("dfs.datanode.use.datanode.hostname", false);
    // Small blocks and quick heartbeats: a test cluster, not a production one.
    conf.setLong("dfs.blocksize", 8L * 1024 * 1024);
    conf.setLong("dfs.namenode.fs-limits.min-block-size", 1024);
    conf.setInt("dfs.heartbeat.interval", 1);
    for (int i = 7; i < args.length; i++) {
      int eq = args[i].indexOf('=');
      if (eq <= 0) throw new IllegalArgumentException("expected key=value, got " + args[i]);
      conf.set(args[i].substring(0, eq), args[i].substring(eq + 1));
    }
    if (conf.getBoolean("inferq.kerberos", false)) kerberos(conf, base);

    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
        .nameNodePort(nnRpc)
        .nameNodeHttpPort(nnHttp)
        .numDataNodes(1)
        .checkDataNodeAddrConfig(true)
        .format(format)
        .manageNameDfsDirs(true)
        .manageDataDfsDirs(true)
        .build();
    cluster.waitActive();
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
    boolean https = "HTTPS_ONLY".equals(conf.get("dfs.http.policy"));
    System.out.println("READY " + (https ? "https://" + conf.get("dfs.namenode.https-address") : "http://127.0.0.1:" + nnHttp));
    System.out.flush();
    // Until killed, or until the parent closes stdin.
    while (System.in.read() != -1) { }
    System.exit(0);
  }

  // A fresh KDC each start (keys live in memory), one keytab for the NameNode, DataNode and web
  // principals. MiniKdc is reached by reflection: this file compiles without its jars.
  static void kerberos(Configuration conf, String base) throws Exception {
    Class<?> kdcClass = Class.forName("org.apache.hadoop.minikdc.MiniKdc");
    Properties kdcConf = (Properties) kdcClass.getMethod("createConf").invoke(null);
    File work = Files.createTempDirectory(new File(base).toPath().getParent(), "kdc").toFile();
    Object kdc = kdcClass.getConstructor(Properties.class, File.class).newInstance(kdcConf, work);
    kdcClass.getMethod("start").invoke(kdc);
    File keytab = new File(work, "hdfs.keytab");
    kdcClass.getMethod("createPrincipal", File.class, String[].class).invoke(kdc, keytab, new String[] {"hdfs/localhost", "HTTP/localhost"});
    String realm = (String) kdcClass.getMethod("getRealm").invoke(kdc);
    String hdfs = "hdfs/localhost@" + realm;
    conf.set("hadoop.security.authentication", "kerberos");
    conf.set("dfs.namenode.kerberos.principal", hdfs);
    conf.set("dfs.namenode.keytab.file", keytab.getAbsolutePath());
    conf.set("dfs.datanode.kerberos.principal", hdfs);
    conf.set("dfs.datanode.keytab.file", keytab.getAbsolutePath());
    conf.set("dfs.web.authentication.kerberos.principal", "HTTP/localhost@" + realm);
    conf.set("dfs.web.authentication.kerberos.keytab", keytab.getAbsolutePath());
    conf.setBoolean("dfs.block.access.token.enable", true);
    // A secure DataNode on unprivileged ports needs SASL on data transfer (and HTTPS_ONLY).
    conf.set("dfs.data.transfer.protection", "authentication");
    // WebHDFS itself takes user.name (no SPNEGO client in the tests): enough to ask for a token, whose use is then checked.
    conf.set("hadoop.http.authentication.type", "simple");
    conf.setInt("ipc.client.connect.max.retries.on.sasl", 10);
    UserGroupInformation.setConfiguration(conf);
    UserGroupInformation.loginUserFromKeytab(hdfs, keytab.getAbsolutePath());
  }
}
