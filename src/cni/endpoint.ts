/**
 * The WorkloadEndpoint an attachment is recorded as (Calico v3 JSON under
 * /calico/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<name>), and the agent's
 * report that it has programmed it (Felix's endpoint status key). Building the resource is pure;
 * EndpointStore is the narrow datastore interface the plugin uses, with an etcd implementation.
 */
import type { Etcd3 } from 'etcd3';
import { NotFoundError } from '../errors.ts';
import { ResourceStore } from '../datastore/resource-store.ts';
import { lookupKind } from '../model/kinds.ts';
import type { Resource } from '../model/resource.ts';
import type { ProfileSpec, WorkloadEndpointSpec } from '../model/types.ts';
import { endpointStatusKey } from '../agent/status/reporter.ts';
import type { WorkloadIdentity } from './naming.ts';

const WEP = lookupKind('WorkloadEndpoint')!;
const PROFILE = lookupKind('Profile')!;

export type WorkloadEndpoint = Resource<WorkloadEndpointSpec>;

export interface WepInput {
  readonly id: WorkloadIdentity;
  readonly network: string;
  readonly containerMac: string;
  readonly ipNetworks: readonly string[];
  readonly profiles?: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
}

/** Profiles when the configuration names none: k8s `kns.<namespace>`, otherwise the network's name (Calico). */
export function defaultProfiles(id: WorkloadIdentity, network: string): string[] {
  return id.orchestrator === 'k8s' ? [`kns.${id.namespace}`] : [network];
}

export function buildWep(i: WepInput): WorkloadEndpoint {
  const { id } = i;
  const spec: WorkloadEndpointSpec = {
    orchestrator: id.orchestrator,
    workload: id.orchestrator === 'k8s' ? '' : id.workload,
    node: id.node,
    containerID: id.containerId,
    ...(id.pod ? { pod: id.pod } : {}),
    endpoint: id.endpoint,
    interfaceName: id.hostVeth,
    mac: i.containerMac || undefined,
    ipNetworks: [...i.ipNetworks],
    profiles: [...(i.profiles ?? defaultProfiles(id, i.network))],
  };
  if (!spec.mac) delete spec.mac;
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'WorkloadEndpoint',
    metadata: {
      name: id.wepName,
      namespace: id.namespace,
      labels: { ...i.labels, 'projectcalico.org/namespace': id.namespace, 'projectcalico.org/orchestrator': id.orchestrator },
    },
    spec,
  };
}

/** Calico's profile for a plain-CNI network: members may talk to each other, egress is open. */
export function networkProfile(network: string): Resource<ProfileSpec> {
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'Profile',
    metadata: { name: network },
    spec: {
      ingress: [{ action: 'Allow', source: { selector: `has(${network})` } }],
      egress: [{ action: 'Allow' }],
      labelsToApply: { [network]: '' },
    } as ProfileSpec,
  };
}

export interface EndpointStore {
  get(namespace: string, name: string): Promise<WorkloadEndpoint | undefined>;
  /** Create or replace. */
  put(wep: WorkloadEndpoint): Promise<void>;
  /** Idempotent; false when it was not there. */
  delete(namespace: string, name: string): Promise<boolean>;
  /** Every endpoint of a node (for GC). */
  listForNode(node: string): Promise<WorkloadEndpoint[]>;
  /** Creates the profile unless one of that name exists. */
  ensureProfile(profile: Resource<ProfileSpec>): Promise<void>;
  /** The agent's report for an endpoint: 'up', 'down' or undefined (not reported). */
  status(node: string, namespace: string, name: string): Promise<string | undefined>;
}

export class EtcdEndpointStore implements EndpointStore {
  readonly #client: Etcd3;
  readonly #store: ResourceStore;

  constructor(client: Etcd3) {
    this.#client = client;
    this.#store = new ResourceStore(client);
  }

  async get(namespace: string, name: string): Promise<WorkloadEndpoint | undefined> {
    try {
      return (await this.#store.get(WEP, name, namespace)) as unknown as WorkloadEndpoint;
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async put(wep: WorkloadEndpoint): Promise<void> {
    await this.#store.apply(wep as unknown as Resource);
  }

  async delete(namespace: string, name: string): Promise<boolean> {
    try {
      await this.#store.delete(WEP, name, namespace);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  async listForNode(node: string): Promise<WorkloadEndpoint[]> {
    return ((await this.#store.list(WEP)) as unknown as WorkloadEndpoint[]).filter((w) => w.spec?.node === node);
  }

  async ensureProfile(profile: Resource<ProfileSpec>): Promise<void> {
    try {
      await this.#store.get(PROFILE, profile.metadata.name);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      await this.#store.create(profile as unknown as Resource).catch((e: unknown) => {
        if ((e as { code?: string }).code !== 'E_EXISTS') throw e;
      });
    }
  }

  async status(node: string, namespace: string, name: string): Promise<string | undefined> {
    const v = await this.#client.get(endpointStatusKey(node, `wep/${namespace}/${name}`)).string();
    if (v === null) return undefined;
    try {
      return String((JSON.parse(v) as { status?: unknown }).status ?? '');
    } catch {
      return undefined;
    }
  }
}

/** Polls the agent's status for the endpoint until it is 'up'; false on timeout. */
export async function waitForEndpointUp(
  store: EndpointStore,
  node: string,
  namespace: string,
  name: string,
  timeoutMs: number,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  now: () => number = Date.now,
): Promise<boolean> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if ((await store.status(node, namespace, name)) === 'up') return true;
    if (now() >= deadline) return false;
    await sleep(Math.min(200, Math.max(1, deadline - now())));
  }
}
