// Package ctlport is the workstations' Tor control port: a filtered one,
// served by torgate itself (Whonix-Gateway runs onion-grater for this).
// The router hands it every TCP flow to the gateway's own address on the
// control port (9051) as a flow.Request; ctlport speaks Tor's control
// protocol (https://spec.torproject.org/control-spec/) to the workstation
// and answers every command itself. Nothing a workstation sends is ever
// forwarded to Tor: what ctlport needs from Tor it asks with GETINFO for
// a fixed list of keys, on torgate's own control connection (Tor).
//
// What a workstation gets, and why (workstations are strangers to one
// another and to the gateway; a compromised one must learn nothing about
// the others, nor change anything they share):
//
//   - PROTOCOLINFO, AUTHENTICATE: authentication method NULL. Any
//     password is accepted: what is behind the port is harmless, and
//     Tor Browser and Whonix's scripts send whatever they are configured
//     with. Before AUTHENTICATE only PROTOCOLINFO, AUTHCHALLENGE and QUIT
//     are answered; anything else gets Tor's "514 Authentication
//     required." and the connection is closed, as Tor does. That, and
//     closing at once on a line that starts like an HTTP request, keeps
//     a web page from driving the port through a form POST.
//   - GETINFO version, status/circuit-established, status/bootstrap-phase
//     and consensus/valid-after, fresh-until, valid-until: from Tor,
//     cached for infoTTL so that no number of workstations makes torgate
//     ask Tor more than about once a second per key. Without a control
//     connection (plain SOCKS mode) the status keys are answered from
//     Config.Ready and the others refused with 551.
//   - GETINFO net/listeners/socks: torgate's own answer, the gateway's
//     SOCKS address(es) on the address the workstation connected to,
//     never Tor's real (loopback or unix) listener.
//   - Every other GETINFO key: 552 Unrecognized key, Tor's wording for a
//     key it does not know. Among them circuit-status and stream-status:
//     the entry guard is the gateway's, shared by every workstation, so a
//     compromised workstation must not learn the relay by which all
//     workstations' traffic enters Tor (nor the other workstations'
//     streams and destinations). Tor Browser's circuit display then shows
//     nothing; browsing is unaffected. Also refused: address, ns/*,
//     exit-policy/*, info/names and the rest.
//   - SIGNAL NEWNYM: Config.NewIdentity for this workstation only (new
//     circuits for it alone), never Tor's global NEWNYM, which would cut
//     every workstation's circuits. Limited as Tor limits it, per
//     workstation: one per NewNymInterval; an early one is answered 250
//     OK and carried out when the interval ends (several early ones
//     become one), as Tor delays rather than drops it.
//   - Every other signal: 552 Unrecognized signal code, Tor's own
//     wording for a signal it does not know, so a client handles it as
//     "not available here". Each acts on the Tor that all workstations
//     share (RELOAD, SHUTDOWN, HALT, DORMANT, ACTIVE, HEARTBEAT, DUMP,
//     DEBUG, CLEARDNSCACHE). CLEARDNSCACHE is refused, not answered with a
//     no-op 250: a 250 would say that something happened, and NEWNYM
//     already clears what a workstation may clear (its own circuits).
//   - SETEVENTS: a list of known event names is accepted with 250 OK,
//     and no event is ever sent: none of Tor's events is scoped to one
//     workstation (CIRC and STREAM name every workstation's circuits and
//     destinations, STATUS_* and log events are Tor's as a whole).
//   - GETCONF DisableNetwork (0: the network is on; the workstation could
//     not change it anyway) and __OwningControllerProcess (unset; stem
//     asks it after authenticating); any other key: 552.
//   - USEFEATURE VERBOSE_NAMES, EXTENDED_EVENTS: 250 OK (always on in Tor).
//   - QUIT: 250 closing connection.
//   - Every other command, among them SETCONF, RESETCONF, LOADCONF,
//     SAVECONF, ADD_ONION, DEL_ONION, TAKEOWNERSHIP, DROPGUARDS,
//     MAPADDRESS, EXTENDCIRCUIT, ATTACHSTREAM, CLOSECIRCUIT and every
//     multi-line ("+") command: 510 Unrecognized command, Tor's wording
//     for a command it does not know. A multi-line command's data is read
//     (at most maxDataBytes) and discarded.
//
// Bounds (all counted in refused_total by reason): a line longer than
// Config.MaxLine, or with a control character (NUL, binary), closes the
// connection after an error line; a connection must authenticate within
// PreAuthTimeout and maxPreAuthCommands; after it, commands are taken at
// CommandRate with a burst of CommandBurst and the rest wait (a flood
// slows itself down, never Tor); connections are capped at MaxConns in
// all and MaxConnsPerSource per workstation (internal/fair shares), and a
// refused one gets a RST before its handshake completes. An authenticated
// connection has no idle timeout: Tor Browser keeps its one open for the
// whole session.
//
// Use: New, then ServeTCP for each flow the router routes here, Metrics
// into the registry, Close at shutdown.
package ctlport
