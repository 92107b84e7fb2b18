/**
 * DOC: AFI/SAFI numbers (IANA) <-> the contract's AfiSafi names. Only IPv4 and IPv6 unicast
 * are supported; anything else maps to undefined and callers keep or ignore it.
 */
import type { Afi, AfiSafi } from '../types.ts';

export function afiSafiOf(afi: number, safi: number): AfiSafi | undefined {
  if (safi !== 1) return undefined;
  return afi === 1 ? 'ipv4-unicast' : afi === 2 ? 'ipv6-unicast' : undefined;
}

export function afiOf(f: AfiSafi): Afi {
  return f === 'ipv4-unicast' ? 1 : 2;
}

export const SAFI_UNICAST = 1;
