/**
 * Every configuration parameter, declared once: its name, type, default, flag, environment
 * variable, whether it is a secret, which roles take it and, where Calico has one, the datastore
 * field (FelixConfiguration / BGPConfiguration) that can set it. Help text, `--print-config`,
 * the resolver and the generated reference in docs/ all read this table. Pure data.
 */
export const ROLES = ['node', 'reflector', 'proxy', 'cni', 'ctl', 'status'] as const;
export type Role = (typeof ROLES)[number];

export type ParamType = 'string' | 'int' | 'bool' | 'list' | 'duration';

export interface ParamDecl {
  /** camelCase key used in code and in the YAML config file. */
  readonly name: string;
  readonly type: ParamType;
  readonly default: string | number | boolean | readonly string[] | undefined;
  /** Kebab-case flag without the dashes. */
  readonly flag: string;
  readonly env?: string;
  readonly secret?: boolean;
  readonly description: string;
  readonly roles: readonly Role[] | 'all';
  /** Allowed values, for enumerations. */
  readonly choices?: readonly string[];
  /** Where a datastore resource can set it (lower precedence than flags, env and the file). */
  readonly datastore?: { readonly kind: 'FelixConfiguration' | 'BGPConfiguration'; readonly field: string };
}

const ALL = 'all' as const;

export const PARAMS: readonly ParamDecl[] = [
  // Every role.
  { name: 'etcdEndpoints', type: 'list', default: ['http://127.0.0.1:2379'], flag: 'etcd-endpoints', env: 'ETCD_ENDPOINTS', description: 'etcd client URLs, comma separated', roles: ALL },
  { name: 'etcdCaCertFile', type: 'string', default: undefined, flag: 'etcd-ca-cert-file', env: 'ETCD_CA_CERT_FILE', description: 'CA certificate that signed the etcd servers\' certificates', roles: ALL },
  { name: 'etcdCertFile', type: 'string', default: undefined, flag: 'etcd-cert-file', env: 'ETCD_CERT_FILE', description: 'client certificate for etcd', roles: ALL },
  { name: 'etcdKeyFile', type: 'string', default: undefined, flag: 'etcd-key-file', env: 'ETCD_KEY_FILE', description: 'client key for etcd', roles: ALL },
  { name: 'etcdUsername', type: 'string', default: undefined, flag: 'etcd-username', env: 'ETCD_USERNAME', description: 'etcd user name', roles: ALL },
  { name: 'etcdPassword', type: 'string', default: undefined, flag: 'etcd-password', env: 'ETCD_PASSWORD', secret: true, description: 'etcd password', roles: ALL },
  { name: 'runDir', type: 'string', default: '/var/run/routecat', flag: 'run-dir', env: 'ROUTECAT_RUN_DIR', description: 'state directory and control socket', roles: ALL },
  { name: 'logLevel', type: 'string', default: 'info', flag: 'log-level', env: 'ROUTECAT_LOG_LEVEL', choices: ['debug', 'info', 'warn', 'error', 'silent'], description: 'log level', roles: ALL, datastore: { kind: 'FelixConfiguration', field: 'logSeverityScreen' } },
  { name: 'config', type: 'string', default: undefined, flag: 'config', env: 'ROUTECAT_CONFIG', description: 'YAML file of parameters (camelCase or flag names)', roles: ALL },

  // node (Felix + BGP speaker) and reflector.
  { name: 'nodename', type: 'string', default: undefined, flag: 'name', env: 'NODENAME', description: 'this host\'s Node resource name (default: the host name)', roles: ['node', 'reflector', 'status'] },
  { name: 'ip', type: 'string', default: undefined, flag: 'ip', env: 'IP', description: 'IPv4 address for BGP (default: autodetected, first found)', roles: ['node', 'reflector'] },
  { name: 'ip6', type: 'string', default: undefined, flag: 'ip6', env: 'IP6', description: 'IPv6 address for BGP', roles: ['node', 'reflector'] },
  { name: 'asNumber', type: 'int', default: undefined, flag: 'as', env: 'AS', description: 'this node\'s AS number (default: BGPConfiguration asNumber, else 64512)', roles: ['node', 'reflector'] },
  { name: 'networkingBackend', type: 'string', default: 'bird', flag: 'networking-backend', env: 'CALICO_NETWORKING_BACKEND', choices: ['bird', 'bgp', 'none'], description: 'bird/bgp runs the BGP speaker; none is policy-only', roles: ['node'] },
  { name: 'bgp', type: 'bool', default: true, flag: 'bgp', env: 'ROUTECAT_BGP', description: 'run the BGP speaker (--no-bgp for policy-only)', roles: ['node'] },
  { name: 'dataplane', type: 'string', default: 'iptables', flag: 'dataplane', env: 'ROUTECAT_DATAPLANE', choices: ['iptables', 'nftables'], description: 'ACL backend', roles: ['node'] },
  { name: 'interfacePrefix', type: 'string', default: 'cali', flag: 'interface-prefix', env: 'FELIX_INTERFACEPREFIX', description: 'host-side workload interface name prefix', roles: ['node', 'cni'], datastore: { kind: 'FelixConfiguration', field: 'interfacePrefix' } },
  { name: 'routeRefreshInterval', type: 'duration', default: '10s', flag: 'route-refresh-interval', env: 'FELIX_ROUTEREFRESHINTERVAL', description: 'period of the re-read of routes and interfaces that repairs drift', roles: ['node'], datastore: { kind: 'FelixConfiguration', field: 'routeRefreshInterval' } },
  { name: 'iptablesRefreshInterval', type: 'duration', default: '90s', flag: 'iptables-refresh-interval', env: 'FELIX_IPTABLESREFRESHINTERVAL', description: 'period of the full re-read of the ACL dataplane (iptables+ipset or nftables) that repairs drift', roles: ['node'], datastore: { kind: 'FelixConfiguration', field: 'iptablesRefreshInterval' } },
  { name: 'defaultEndpointToHostAction', type: 'string', default: 'drop', flag: 'default-endpoint-to-host-action', env: 'FELIX_DEFAULTENDPOINTTOHOSTACTION', choices: ['drop', 'accept', 'return'], description: 'traffic from a workload to its own host, after the workload\'s egress policy: drop, accept, or return (on to the host\'s INPUT rules and host endpoint policy)', roles: ['node'], datastore: { kind: 'FelixConfiguration', field: 'defaultEndpointToHostAction' } },
  { name: 'reportingInterval', type: 'duration', default: '30s', flag: 'reporting-interval', env: 'FELIX_REPORTINGINTERVAL', description: 'how often status is written to the datastore', roles: ['node'], datastore: { kind: 'FelixConfiguration', field: 'reportingInterval' } },
  { name: 'healthHost', type: 'string', default: '127.0.0.1', flag: 'health-host', env: 'FELIX_HEALTHHOST', description: 'address for /liveness and /readiness', roles: ['node', 'reflector', 'proxy'], datastore: { kind: 'FelixConfiguration', field: 'healthHost' } },
  { name: 'healthPort', type: 'int', default: 9099, flag: 'health-port', env: 'FELIX_HEALTHPORT', description: 'port for /liveness and /readiness (0 disables)', roles: ['node', 'reflector'], datastore: { kind: 'FelixConfiguration', field: 'healthPort' } },
  { name: 'metricsPort', type: 'int', default: 9091, flag: 'metrics-port', env: 'FELIX_PROMETHEUSMETRICSPORT', description: 'Prometheus metrics port on the health host (0 disables)', roles: ['node', 'reflector'], datastore: { kind: 'FelixConfiguration', field: 'prometheusMetricsPort' } },
  { name: 'bgpListenPort', type: 'int', default: 179, flag: 'bgp-listen-port', env: 'ROUTECAT_BGP_LISTEN_PORT', description: 'TCP port the BGP speaker listens on', roles: ['node', 'reflector'], datastore: { kind: 'BGPConfiguration', field: 'listenPort' } },
  { name: 'bgpExportProtocols', type: 'list', default: [], flag: 'bgp-export-protocols', env: 'ROUTECAT_BGP_EXPORT_PROTOCOLS', description: 'also advertise kernel routes of these protocols (numbers or kernel, boot, static, ra, dhcp), comma separated', roles: ['node'] },
  { name: 'clusterId', type: 'string', default: undefined, flag: 'cluster-id', env: 'ROUTECAT_CLUSTER_ID', description: 'route reflector cluster ID (default: the Node\'s routeReflectorClusterID, else the router ID)', roles: ['reflector'] },

  // proxy.
  { name: 'listen', type: 'string', default: '127.0.0.1:2379', flag: 'listen', env: 'ROUTECAT_PROXY_LISTEN', description: 'address the etcd proxy serves on', roles: ['proxy'] },
  { name: 'listenCertFile', type: 'string', default: undefined, flag: 'listen-cert-file', env: 'ROUTECAT_PROXY_CERT_FILE', description: 'serve TLS on --listen with this certificate (PEM; needs --listen-key-file)', roles: ['proxy'] },
  { name: 'listenKeyFile', type: 'string', default: undefined, flag: 'listen-key-file', env: 'ROUTECAT_PROXY_KEY_FILE', description: 'private key of --listen-cert-file (PEM)', roles: ['proxy'] },
  { name: 'listenClientCaFile', type: 'string', default: undefined, flag: 'listen-client-ca-file', env: 'ROUTECAT_PROXY_CLIENT_CA_FILE', description: 'require client certificates signed by this CA on --listen', roles: ['proxy'] },
  { name: 'allowRemote', type: 'bool', default: false, flag: 'allow-remote', env: 'ROUTECAT_PROXY_ALLOW_REMOTE', description: 'allow --listen on a non-loopback address (use with TLS and client certificates)', roles: ['proxy'] },
  { name: 'proxyHealthPort', type: 'int', default: 9097, flag: 'health-port', env: 'ROUTECAT_PROXY_HEALTH_PORT', description: 'port on --health-host for the proxy\'s /liveness, /readiness and /metrics (0 disables; 9099 is the node\'s)', roles: ['proxy'] },
  { name: 'cacheWindow', type: 'int', default: 10000, flag: 'cache-window', env: 'ROUTECAT_PROXY_CACHE_WINDOW', description: 'recent events kept per cached prefix for watches that start in the past', roles: ['proxy'] },
  { name: 'maxWatchBacklogMib', type: 'int', default: 64, flag: 'max-watch-backlog-mib', env: 'ROUTECAT_PROXY_MAX_WATCH_BACKLOG_MIB', description: 'a client watch stream that falls this far behind (MiB unsent) is cancelled rather than buffered further', roles: ['proxy'] },
  { name: 'cachePrefixes', type: 'list', default: ['/calico/'], flag: 'cache-prefixes', env: 'ROUTECAT_PROXY_CACHE_PREFIXES', description: 'key prefixes held in the cache', roles: ['proxy'] },
];

export function paramsFor(role: Role): ParamDecl[] {
  return PARAMS.filter((p) => p.roles === 'all' || p.roles.includes(role));
}

export function paramByName(name: string): ParamDecl | undefined {
  return PARAMS.find((p) => p.name === name);
}
