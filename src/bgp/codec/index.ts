/**
 * DOC: Public surface of the BGP-4 codec. Pure functions over Buffers and the plain data types
 * of src/bgp/types.ts; imports nothing else from routecat. Decoding throws `BgpError` only for
 * session-resetting errors (carrying the NOTIFICATION to send); RFC 7606 treat-as-withdraw and
 * attribute-discard outcomes come back on the UpdateMessage (`handling`, `errors`).
 */
export { encodeMessage, decodeMessage, shutdownCommunication, HEADER_LENGTH, MAX_MESSAGE_LENGTH } from './messages.ts';
export { packUpdates, endOfRib, endOfRibFamily, isEndOfRib, type PackInput } from './pack.ts';
export { negotiate, codecOptions, CapabilityCode, type Negotiated } from './capabilities.ts';
export { Framer } from './framer.ts';
export { AS_TRANS, ATTRIBUTES, AttrCode, AttrFlag, attributeSpec, mergeAs4Path, type AttrSpec, type Handling } from './attributes.ts';
export {
  BgpError,
  BgpEncodeError,
  isBgpError,
  ErrorCode,
  HeaderSubcode,
  OpenSubcode,
  UpdateSubcode,
  CeaseSubcode,
  RouteRefreshSubcode,
} from './errors.ts';
export { formatIPv6 } from './prefixes.ts';
