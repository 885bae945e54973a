package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/torgate/torgate"
)

const configUsage = `usage: torgate config check [--config FILE] [run's flags]

Checks a configuration as "torgate run" would, with the same flags and
config file, without starting anything: prints the effective
configuration (every key = value, as the config file spells it) and
exits 0, or prints every error found and exits 1. It reads the LAN
interfaces' addresses and the state directory's permissions, and
changes nothing: no file, interface, rule or process. Checking a --lan
configuration needs root (the interface may be in its LAN namespace).
`

// cmdConfig runs "torgate config check".
func cmdConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, configUsage)
		return flag.ErrHelp
	}
	if args[0] != "check" {
		fmt.Fprint(stderr, configUsage)
		return fmt.Errorf("config: unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("torgate config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, configUsage+"\nrun's flags:\n")
		fs.PrintDefaults()
	}
	var f runFlags
	f.register(fs)
	if err := parseRunFlags(fs, &f, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config check: unexpected argument %q: every setting is a flag (-h lists them) or a --config file key", fs.Arg(0))
	}
	v, err := f.validate(false)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "torgate config check:", line)
		}
		return exitError{code: 1}
	}
	printConfig(stdout, fs, &f, v)
	return nil
}

// printConfig writes the effective configuration in the config file's
// TOML: every key, with its value from the command line, the file or the
// default; keys the mode does not use are shown commented out.
func printConfig(w io.Writer, fs *flag.FlagSet, f *runFlags, v validated) {
	fmt.Fprintf(w, "# torgate config check: valid; tor mode %s\n", v.mode)
	for _, l := range v.lans {
		var ps []string
		for _, p := range l.info.Prefixes {
			ps = append(ps, p.String())
		}
		where := "in the gateway's namespace"
		if l.info.Taken {
			where = "in its LAN namespace already"
		}
		fmt.Fprintf(w, "# lan %s: gateway %s (%s)\n", l.name, strings.Join(ps, ", "), where)
	}
	for _, warn := range v.warnings {
		fmt.Fprintf(w, "# warning: %s\n", warn)
	}
	unused := map[string]string{}
	if len(f.lan) > 0 {
		for _, k := range []string{"tun", "tun-fd", "addr", "addr6", "mtu"} {
			unused[k] = "not used with lan"
		}
	}
	if v.mode != torgate.ModeManaged {
		for _, k := range []string{"tor-path", "torrc", "tor-user", "tor-instances"} {
			unused[k] = "only for the Tor torgate starts"
		}
	}
	var onions []string
	fs.VisitAll(func(fl *flag.Flag) {
		key := fl.Name
		switch key {
		case "config":
			return
		case "onion":
			onions = f.onions
			return
		case "tor-control-password":
			if f.tor.password != "" {
				fmt.Fprintf(w, "# %s is set (not shown)\n", key)
				return
			}
		case "state-dir":
			fmt.Fprintf(w, "%s = %s\n", key, strconv.Quote(v.stateDir))
			return
		}
		line := key + " = " + tomlValue(fl.Value)
		if why := unused[key]; why != "" {
			line = "# " + line + " (" + why + ")"
		}
		fmt.Fprintln(w, line)
	})
	for _, o := range onions {
		on, err := parseOnion(o)
		if err != nil {
			continue // validated: cannot happen
		}
		fmt.Fprintf(w, "\n[[onion]]\nport = %d\ntarget = %s\n", on.Port, strconv.Quote(on.Target.String()))
	}
}

// tomlValue spells a flag's value as TOML: a bare number or boolean, a
// quoted string, an array for a repeatable flag.
func tomlValue(v flag.Value) string {
	if l, ok := v.(*stringList); ok {
		q := make([]string, len(*l))
		for i, s := range *l {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	g, ok := v.(flag.Getter)
	if !ok {
		return strconv.Quote(v.String())
	}
	switch x := g.Get().(type) {
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case string:
		return strconv.Quote(x)
	}
	return strconv.Quote(v.String())
}
