package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/torgate/torgate/internal/lan"
)

const lanUsage = `usage: torgate lan down IFACE
       torgate lan guard [--allow-missing] [--config FILE] [IFACE...]

"torgate run --lan IFACE" takes IFACE away from the gateway's kernel: it
records IFACE's addresses in the interface's alias, moves IFACE into a
network namespace of its own (tg-IFACE; ip netns shows it) where it has
no address, no route, no IPv6 and no ARP, and puts the macvtap tg-IFACE
on it there. A bridge cannot move: it stays, stripped, and only its
macvtap moves. All of this stays when torgate stops, so the LAN stays
closed.

down   gives IFACE back to the kernel as it was before torgate: removes
       the macvtap, moves IFACE back with its addresses, removes the
       namespace and the guard policy rules (iif IFACE / iif tg-IFACE
       blackhole, before the local table; the local table rule returns
       to priority 0 once no guard is left). Refused while a torgate
       serves IFACE, and for an IFACE torgate never took.
guard  for a boot-time unit ordered before network-pre.target: installs
       the guard rules, which match by name and so work before IFACE
       exists, makes the namespace (from the host's mount namespace, so
       that a torgate in a hardened unit can use it) and, if IFACE is
       already there with its address, takes it at once.
       An IFACE that does not exist is refused (a typo would leave the
       real interface unguarded), unless --allow-missing: then its rules
       are installed by name and a warning is printed. The boot unit
       needs --allow-missing: it runs before network-pre.target, when a
       NIC may not exist yet or not carry its final name. --config
       guards the interfaces of the config file's "lan" key too, so
       that the boot unit and torgate.service read the same file.
`

// cmdLAN runs "torgate lan down|guard".
func cmdLAN(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, lanUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "down":
		if len(args) != 2 {
			fmt.Fprint(stderr, lanUsage)
			return fmt.Errorf("lan down: want one interface, got %d", len(args)-1)
		}
		if err := lan.Down(args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: given back to the kernel with its addresses; macvtap %s, LAN namespace and guard rules removed\n", args[1], lan.TapName(args[1]))
		return nil
	case "guard":
		fs := flag.NewFlagSet("torgate lan guard", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() { fmt.Fprint(stderr, lanUsage) }
		allowMissing := fs.Bool("allow-missing", false, "guard an interface that does not exist (yet) by name, with a warning")
		configFile := fs.String("config", "", "also guard the interfaces of this config file's \"lan\" key (torgate run's --config)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		ifaces := fs.Args()
		if *configFile != "" {
			fromFile, err := configLANs(*configFile)
			if err != nil {
				return fmt.Errorf("lan guard: %w", err)
			}
			for _, iface := range fromFile {
				if !slices.Contains(ifaces, iface) {
					ifaces = append(ifaces, iface)
				}
			}
		}
		if len(ifaces) < 1 {
			fmt.Fprint(stderr, lanUsage)
			if *configFile != "" {
				return fmt.Errorf("lan guard: %s has no \"lan\" key and no interface is named", *configFile)
			}
			return fmt.Errorf("lan guard: want at least one interface")
		}
		// Every name is checked before any rule is installed.
		var missing []string
		for _, iface := range ifaces {
			ok, err := lan.Exists(iface)
			if err != nil {
				return err
			}
			if !ok {
				missing = append(missing, iface)
			}
		}
		if len(missing) > 0 && !*allowMissing {
			return fmt.Errorf("lan guard: no such interface %s (ip link lists them; a NIC that appears only later at boot: --allow-missing guards it by name now)", strings.Join(missing, ", "))
		}
		if err := lan.Guard(ifaces...); err != nil {
			return err
		}
		for _, iface := range missing {
			fmt.Fprintf(stderr, "torgate lan guard: warning: no interface %s (yet): guarded by name from now on; if the name is a typo, the real LAN interface is NOT guarded\n", iface)
		}
		fmt.Fprintf(stdout, "guard rules and LAN namespaces in place for %s\n", strings.Join(ifaces, ", "))
		return nil
	}
	fmt.Fprint(stderr, lanUsage)
	return fmt.Errorf("lan: unknown subcommand %q", args[0])
}
