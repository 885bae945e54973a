package lan

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Guard rules: for IPv4 and IPv6, "iif NAME blackhole" at priority 0,
// ahead of the local table, for the LAN interface and its macvtap. They
// match by name, so they hold before the interface exists, after a USB
// NIC is re-plugged, while torgate is down and after it crashed: whatever
// reaches the kernel from the LAN is dropped without an ICMP answer, never
// routed, and never reaches the gateway's own services. Only "torgate lan
// down" removes them.
//
// To get ahead of the local table without reordering anybody else's
// rules, the local rule moves from priority 0 to 1, with a local rule in
// place at every moment: add local@1, add the guards at 0 (a rule of equal
// priority goes after the existing ones, so after local@0), delete
// local@0. Result: guards@0, local@1.
const (
	guardPriority = 0
	localPriority = 1
	tableLocal    = unix.RT_TABLE_LOCAL
)

var families = []int{unix.AF_INET, unix.AF_INET6}

// ruleInfo is what the guard logic needs of one policy rule.
type ruleInfo struct {
	prio      uint32
	action    uint8
	table     uint32
	iif       string
	selectors bool // any selector besides iif (from, to, oif, fwmark, ...)
}

func (r ruleInfo) isGuard() bool {
	return r.prio == guardPriority && r.action == nl.FR_ACT_BLACKHOLE && r.iif != "" && !r.selectors
}

func (r ruleInfo) isLocal(prio uint32) bool {
	return r.prio == prio && r.action == nl.FR_ACT_TO_TBL && r.table == tableLocal && r.iif == "" && !r.selectors
}

// listRules dumps one family's policy rules. netlink.RuleList does not
// report a rule's action, which tells a blackhole from a lookup.
func listRules(family int) ([]ruleInfo, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETRULE, unix.NLM_F_DUMP|unix.NLM_F_REQUEST)
	req.AddData(nl.NewIfInfomsg(family))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWRULE)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var out []ruleInfo
	for _, m := range msgs {
		hdr := nl.DeserializeRtMsg(m)
		attrs, err := nl.ParseRouteAttr(m[hdr.Len():])
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		// fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2,
		// action; rtmsg has the same layout with Type in action's place.
		r := ruleInfo{action: hdr.Type, table: uint32(hdr.Table), selectors: hdr.Dst_len != 0 || hdr.Src_len != 0 || hdr.Tos != 0 || hdr.Flags&unix.FIB_RULE_INVERT != 0}
		for _, a := range attrs {
			switch a.Attr.Type {
			case nl.FRA_PRIORITY:
				r.prio = nl.NativeEndian().Uint32(a.Value)
			case nl.FRA_TABLE:
				r.table = nl.NativeEndian().Uint32(a.Value)
			case nl.FRA_IIFNAME:
				if len(a.Value) > 0 {
					r.iif = string(a.Value[:len(a.Value)-1])
				}
			case nl.FRA_OIFNAME, nl.FRA_FWMARK, nl.FRA_FWMASK, nl.FRA_DPORT_RANGE, nl.FRA_SPORT_RANGE,
				nl.FRA_IP_PROTO, nl.FRA_UID_RANGE, nl.FRA_TUN_ID, nl.FRA_SUPPRESS_PREFIXLEN, nl.FRA_SUPPRESS_IFGROUP:
				if a.Attr.Type == nl.FRA_SUPPRESS_PREFIXLEN || a.Attr.Type == nl.FRA_SUPPRESS_IFGROUP {
					if nl.NativeEndian().Uint32(a.Value) == 0xffffffff {
						continue // "unset"
					}
				}
				if a.Attr.Type == nl.FRA_FWMASK && nl.NativeEndian().Uint32(a.Value) == 0 {
					continue
				}
				if a.Attr.Type == nl.FRA_FWMARK && nl.NativeEndian().Uint32(a.Value) == 0 {
					continue
				}
				r.selectors = true
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func hasRule(rs []ruleInfo, pred func(ruleInfo) bool) bool {
	for _, r := range rs {
		if pred(r) {
			return true
		}
	}
	return false
}

func guardRule(family int, iif string) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = guardPriority
	r.IifName = iif
	r.Type = nl.FR_ACT_BLACKHOLE
	return r
}

func localRule(family, prio int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = prio
	r.Table = tableLocal
	return r
}

// ensureGuards installs the guard rules for names in both families and
// moves the local rule behind them. Idempotent: present guards are kept
// as they are, never deleted and re-added. It returns the guards it
// added, so a failed Open can take them back.
func ensureGuards(names []string) (added []*netlink.Rule, err error) {
	for _, fam := range families {
		rs, err := listRules(fam)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue // IPv6 disabled in the kernel: nothing to guard
		}
		if err != nil {
			return added, err
		}
		local0 := hasRule(rs, func(r ruleInfo) bool { return r.isLocal(guardPriority) })
		local1 := hasRule(rs, func(r ruleInfo) bool { return r.isLocal(localPriority) })
		if local0 && !local1 {
			if err := netlink.RuleAdd(localRule(fam, localPriority)); err != nil {
				return added, fmt.Errorf("add local table rule at priority %d: %w", localPriority, err)
			}
		}
		for _, name := range names {
			if hasRule(rs, func(r ruleInfo) bool { return r.isGuard() && r.iif == name }) {
				continue
			}
			g := guardRule(fam, name)
			if err := netlink.RuleAdd(g); err != nil {
				return added, fmt.Errorf("add guard rule iif %s blackhole: %w", name, err)
			}
			added = append(added, g)
		}
		if local0 {
			if err := netlink.RuleDel(localRule(fam, guardPriority)); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
				return added, fmt.Errorf("move local table rule to priority %d: %w", localPriority, err)
			}
		}
	}
	return added, nil
}

// removeGuards deletes the guard rules for names in both families, then,
// in each family with no guard left, moves the local rule back to
// priority 0 (adding local@0 before deleting local@1).
func removeGuards(names []string) error {
	var errs []error
	for _, fam := range families {
		rs, err := listRules(fam)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil {
			return err
		}
		for _, name := range names {
			for _, r := range rs {
				if r.isGuard() && r.iif == name {
					if err := netlink.RuleDel(guardRule(fam, name)); err != nil && !errors.Is(err, unix.ENOENT) {
						errs = append(errs, fmt.Errorf("delete guard rule iif %s: %w", name, err))
					}
				}
			}
		}
		errs = append(errs, restoreLocal(fam))
	}
	return errors.Join(errs...)
}

// restoreLocal puts the local rule back at priority 0 when no guard rule
// remains in family.
func restoreLocal(fam int) error {
	rs, err := listRules(fam)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return nil
	}
	if err != nil {
		return err
	}
	if hasRule(rs, ruleInfo.isGuard) || !hasRule(rs, func(r ruleInfo) bool { return r.isLocal(localPriority) }) {
		return nil
	}
	if !hasRule(rs, func(r ruleInfo) bool { return r.isLocal(guardPriority) }) {
		if err := netlink.RuleAdd(localRule(fam, guardPriority)); err != nil {
			return fmt.Errorf("restore local table rule at priority 0: %w", err)
		}
	}
	if err := netlink.RuleDel(localRule(fam, localPriority)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete local table rule at priority %d: %w", localPriority, err)
	}
	return nil
}

// hasGuards reports whether any guard rule for names exists.
func hasGuards(names []string) (bool, error) {
	for _, fam := range families {
		rs, err := listRules(fam)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil {
			return false, err
		}
		for _, name := range names {
			if hasRule(rs, func(r ruleInfo) bool { return r.isGuard() && r.iif == name }) {
				return true, nil
			}
		}
	}
	return false, nil
}

// Guard closes the LAN interfaces ifaces for a boot-time unit ordered
// before network-pre.target: it installs the guard rules (which match by
// name, so they hold for an interface that does not exist yet) and pins
// each interface's LAN namespace from the host's mount namespace, so that
// a torgate in a private one (a hardened unit) can use it. An interface
// that already exists with a gateway address is taken from the kernel at
// once, as torgate run would. It needs the host's mount namespace.
func Guard(ifaces ...string) error {
	var names []string
	for _, i := range ifaces {
		if err := checkName(i); err != nil {
			return err
		}
		names = append(names, i, TapName(i))
	}
	if _, err := ensureGuards(names); err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("lan: netlink: %w", err)
	}
	defer host.Close()
	for _, iface := range ifaces {
		if err := guardOne(host, iface); err != nil {
			return err
		}
	}
	return nil
}

func guardOne(host *netlink.Handle, iface string) error {
	unlock, err := lock(iface)
	if errors.Is(err, ErrBusy) {
		return nil // a torgate serves it: taken already
	}
	if err != nil {
		return err
	}
	defer unlock()
	ns, _, err := openNS(iface)
	if err != nil {
		return err
	}
	defer ns.close()
	p, err := inspect(host, ns, iface, true)
	if err != nil || p.inNS {
		return nil // not there yet, or no address yet: torgate run takes it
	}
	if err := p.takeover(); err != nil {
		return err
	}
	return p.blackholeLAN()
}
