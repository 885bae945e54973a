// Package doccheck holds documentation to the code for tests: it reads the
// limits table of docs/limits.md into rows, parses the numbers each value
// cell states (counts, and durations with their unit), and compares them
// with what a package's test builds from its own constants.
//
// Every row of the table has one owner, a group named in Owners. The
// group's test, in the file Owners names (a package-internal
// limits_doc_test.go, so that it can read unexported constants), calls
// Limits with the rows of its group, and Limits fails unless that test
// checks exactly the rows Owners gives the group. doccheck's own test fails
// when a row has no owner, an owner names a row the table lacks, or a
// group's file does not call Limits for it. Adding a row therefore means
// adding it to Owners and to its group's test; changing a constant means
// changing the table.
//
// Only tests import this package.
package doccheck

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LimitsDoc is the file holding the limits table, relative to the module
// root.
const LimitsDoc = "docs/limits.md"

// A Group is the test that checks some rows of the limits table: File
// (relative to the module root) calls Limits with the variable Var of this
// package.
type Group struct {
	Name string
	File string
	Var  string
}

// The groups.
var (
	GroupTorgate   = Group{"torgate", "limits_doc_test.go", "GroupTorgate"}
	GroupCmd       = Group{"cmd/torgate", "cmd/torgate/limits_doc_test.go", "GroupCmd"}
	GroupTunnel    = Group{"tunnel", "tunnel/limits_doc_test.go", "GroupTunnel"}
	GroupNetstack  = Group{"netstack", "netstack/limits_doc_test.go", "GroupNetstack"}
	GroupDNS       = Group{"dns", "dns/limits_doc_test.go", "GroupDNS"}
	GroupLAN       = Group{"internal/lan", "internal/lan/limits_doc_test.go", "GroupLAN"}
	GroupUpstream  = Group{"internal/upstream", "internal/upstream/limits_doc_test.go", "GroupUpstream"}
	GroupTorctl    = Group{"internal/torctl", "internal/torctl/limits_doc_test.go", "GroupTorctl"}
	GroupCtlport   = Group{"internal/ctlport", "internal/ctlport/limits_doc_test.go", "GroupCtlport"}
	GroupSocksport = Group{"internal/socksport", "internal/socksport/limits_doc_test.go", "GroupSocksport"}
	GroupOnion     = Group{"internal/onion", "internal/onion/limits_doc_test.go", "GroupOnion"}
)

// Groups lists every group.
var Groups = []Group{GroupTorgate, GroupCmd, GroupTunnel, GroupNetstack, GroupDNS, GroupLAN, GroupUpstream, GroupTorctl, GroupCtlport, GroupSocksport, GroupOnion}

// Owners maps each row of the limits table (its "what" cell, verbatim) to
// the group whose test checks it.
var Owners = map[string]Group{
	"SOCKS dial timeout": GroupTunnel,
	"idle flow":          GroupTunnel,
	"TCP keepalive":      GroupNetstack,
	"half-closed flow":   GroupTunnel,
	"handshakes pending (SYN held while Tor dials, then the handshake)": GroupNetstack,
	"SOCKS dials in progress":              GroupTunnel,
	"open flows":                           GroupTunnel,
	"UDP DNS answers in progress":          GroupDNS,
	"DNS-over-TCP connections":             GroupDNS,
	"a DNS-over-TCP connection":            GroupDNS,
	"automap entries":                      GroupDNS,
	"outbound queue to the workstations":   GroupNetstack,
	"TUN txqueuelen (created TUN)":         GroupTorgate,
	"TIME_WAIT (torgate closed first)":     GroupNetstack,
	"garbage collector (`torgate` binary)": GroupCmd,
	"CPUs for Go code":                     GroupCmd,
	"memory after a peak":                  GroupTunnel,
	"Tor control probe":                    GroupTorctl,
	"SOCKS greeting stall":                 GroupUpstream,
	"plain SOCKS probe":                    GroupUpstream,
	"attach-mode reconnect":                GroupTorctl,
	"managed Tor restart":                  GroupTorctl,
	"FIN on an upstream end of stream":     GroupTorgate,
	"bootstrap stall warning":              GroupTorctl,
	"`torgate exec --wait`":                GroupCmd,
	"LAN neighbour resolution (`--lan`)":   GroupLAN,
	"control port connections (9051)":      GroupCtlport,
	"a control port connection":            GroupCtlport,
	"control port answers from Tor":        GroupCtlport,
	"SOCKS-port handshake":                 GroupSocksport,
	"SOCKS-port handshakes in progress":    GroupSocksport,
	"new circuits per workstation (per-destination isolation, SOCKS-port credentials)": GroupTunnel,
	"onion service connections": GroupOnion,
}

// A Row is one row of a table: the "what", "value" and "why" cells.
type Row struct {
	What, Value, Why string
	Line             int // in the file, from 1
}

// Root returns the module root: the nearest directory above the working
// directory (a package's, under go test) that holds go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("doccheck: no go.mod above the working directory")
		}
		dir = parent
	}
}

// ReadTable reads the first table of the markdown file at path whose
// header is "| what | value | why |".
func ReadTable(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []Row
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !in {
			if cells, ok := splitRow(line); ok && slices.Equal(cells, []string{"what", "value", "why"}) {
				in = true
			}
			continue
		}
		cells, ok := splitRow(line)
		if !ok {
			break // the end of the table
		}
		if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
			continue // the delimiter row
		}
		if len(cells) != 3 {
			return nil, fmt.Errorf("%s:%d: %d cells, want 3", path, n, len(cells))
		}
		rows = append(rows, Row{What: cells[0], Value: cells[1], Why: cells[2], Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !in {
		return nil, fmt.Errorf("%s: no table headed | what | value | why |", path)
	}
	return rows, nil
}

func splitRow(line string) ([]string, bool) {
	if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") || len(line) < 2 {
		return nil, false
	}
	cells := strings.Split(line[1:len(line)-1], "|")
	for i, c := range cells {
		cells[i] = strings.TrimSpace(c)
	}
	return cells, true
}

// quantity matches a number (digits, thousands separated by commas,
// optionally a decimal part) and an optional duration unit.
var quantity = regexp.MustCompile(`(\d[\d,]*(?:\.\d+)?)(?:\s*(µs|ms|min|s|h)\b)?`)

var units = map[string]time.Duration{
	"µs":  time.Microsecond,
	"ms":  time.Millisecond,
	"s":   time.Second,
	"min": time.Minute,
	"h":   time.Hour,
}

// Quantities returns the numbers a cell states, in order: a time.Duration
// for a number with a unit (µs, ms, s, min, h), an int64 for a bare
// count. Digits inside a word (IPv4, 0x80) are not numbers.
func Quantities(cell string) ([]any, error) {
	var qs []any
	for _, m := range quantity.FindAllStringSubmatchIndex(cell, -1) {
		if m[0] > 0 {
			if c := cell[m[0]-1]; c == '.' || isWordByte(c) {
				continue // IPv4, x86_64
			}
		}
		num := strings.ReplaceAll(cell[m[2]:m[3]], ",", "")
		if m[4] < 0 {
			if m[1] < len(cell) && isWordByte(cell[m[1]]) {
				continue // 0x80, 3rd
			}
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("count %q: %w", num, err)
			}
			qs = append(qs, n)
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return nil, fmt.Errorf("duration %q: %w", num, err)
		}
		qs = append(qs, time.Duration(f*float64(units[cell[m[4]:m[5]]])))
	}
	return qs, nil
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// normalize turns the integers and durations a test states into what
// Quantities returns.
func normalize(v any) (any, error) {
	switch v := v.(type) {
	case time.Duration:
		return v, nil
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case int32:
		return int64(v), nil
	case uint:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	}
	return nil, fmt.Errorf("%v (%T): want an integer or a time.Duration", v, v)
}

func show(qs []any) string {
	s := make([]string, len(qs))
	for i, q := range qs {
		if d, ok := q.(time.Duration); ok {
			s[i] = d.String()
		} else {
			s[i] = fmt.Sprint(q)
		}
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// Limits checks the rows of the limits table that g owns. want maps each
// of them (its "what" cell) to the numbers its value cell must state, in
// order: integers for counts, time.Durations for durations (so that
// "60 s" matches time.Minute, but not the count 60). It fails unless want
// names exactly the rows Owners gives g.
func Limits(t testing.TB, g Group, want map[string][]any) {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, LimitsDoc)
	rows, err := ReadTable(path)
	if err != nil {
		t.Fatal(err)
	}
	byWhat := map[string]Row{}
	for _, r := range rows {
		byWhat[r.What] = r
	}
	for what, owner := range Owners {
		if _, ok := want[what]; owner == g && !ok {
			t.Errorf("%s: row %q belongs to %s, whose test does not check it", LimitsDoc, what, g.Name)
		}
	}
	for what, w := range want {
		if owner, ok := Owners[what]; !ok || owner != g {
			t.Errorf("%s test checks row %q, which doccheck.Owners gives to %q", g.Name, what, owner.Name)
			continue
		}
		r, ok := byWhat[what]
		if !ok {
			t.Errorf("%s: no row %q", LimitsDoc, what)
			continue
		}
		got, err := Quantities(r.Value)
		if err != nil {
			t.Errorf("%s:%d: %v", LimitsDoc, r.Line, err)
			continue
		}
		wn := make([]any, len(w))
		for i, v := range w {
			if wn[i], err = normalize(v); err != nil {
				t.Fatalf("row %q: %v", what, err)
			}
		}
		if !slices.Equal(got, wn) {
			t.Errorf("%s:%d: row %q states %s, the code %s:\n\t%s", LimitsDoc, r.Line, what, show(got), show(wn), r.Value)
		}
	}
}
