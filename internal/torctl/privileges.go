package torctl

import "github.com/torgate/torgate/internal/privs"

// Keeps returns the capabilities torgate must keep, once it drops the
// rest, for its Tor to go on working: for a managed tor that runs as
// another user (Config.User, Tor.SwitchesUser), CAP_SETUID and CAP_SETGID
// to start it again as that user after a crash, and CAP_KILL to stop it
// (see "Privileges of the managed Tor" in the package doc). A tor started
// as torgate's own user, an attached Tor and no Tor at all (plain SOCKS)
// need none. torgate drops capabilities only after Start, so what Start
// needs (creating and chowning the directories) is not counted. The
// router reports SwitchesUser (Router.TorSwitchesUser), not its Tor.
func Keeps(switchesUser bool) privs.Set {
	if !switchesUser {
		return 0
	}
	return privs.SetOf(privs.CapSetUID, privs.CapSetGID, privs.CapKill)
}
