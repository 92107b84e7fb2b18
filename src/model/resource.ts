/**
 * The shape every v3 resource shares. Specs are typed per kind in src/model/types.ts; this is the
 * envelope that storage and the CLI handle without knowing the kind.
 */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface Resource<Spec = Record<string, unknown>> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: Spec;
  status?: Record<string, unknown>;
}
