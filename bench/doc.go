// Package bench holds torgate's benchmark harness: reusable fakes and the
// in-process benchmarks.
//
//   - Link is an allocation-free in-memory TUN: the router uses it as its
//     tun.Device, and a far end queues packets to it and receives the
//     router's packets synchronously.
//   - Workstation is a lean gVisor host behind a Link, to dial through the
//     router like a workstation would.
//   - RawPeer is a scripted TCP client with no stack at all, so that the
//     allocations and memory a benchmark sees are the router's.
//
// Hermetic tests use internal/wstest instead (several workstations, not
// allocation-free); see its package comment for why there are two.
//
// bench/socksd is the SOCKS5 server (sinks, or real dials) and
// bench/cmd/tgbench the system benchmark; bench/README.md describes both,
// the router contract, the latest results and the record of tuning levers.
package bench
