package doccheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQuantities(t *testing.T) {
	for _, tc := range []struct {
		cell string
		want []any
	}{
		{cell: "90 s", want: []any{90 * time.Second}},
		{cell: "1 h, then RST", want: []any{time.Hour}},
		{cell: "60 s idle, 3 × 10 s", want: []any{time.Minute, int64(3), 10 * time.Second}},
		{cell: "65,536 in all, 16,384 per workstation", want: []any{int64(65536), int64(16384)}},
		{cell: "the last 256 only for proven sources holding < 8", want: []any{int64(256), int64(8)}},
		{cell: "`GOGC=25` unless the environment sets `GOGC`", want: []any{int64(25)}},
		{cell: "500 ms; 1.5 s; 2 min; 3 µs", want: []any{500 * time.Millisecond, 1500 * time.Millisecond, 2 * time.Minute, 3 * time.Microsecond}},
		{cell: "IPv4 and IPv6, 0x80, x86_64", want: nil},
		{cell: "3 sources, 10 seconds", want: []any{int64(3), int64(10)}},
		{cell: "no numbers", want: nil},
	} {
		got, err := Quantities(tc.cell)
		if err != nil {
			t.Errorf("%q: %v", tc.cell, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %s, want %s", tc.cell, show(got), show(tc.want))
		}
	}
}

func TestReadTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.md")
	doc := "# x\n\n| a | b | c |\n| --- | --- | --- |\n| 1 | 2 | 3 |\n\n" +
		"| what | value | why |\n| --- | --- | --- |\n| one | 1 s | because |\n|  two  | 2 | `x` |\n\ntext\n| three | 3 | no |\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadTable(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{"one", "1 s", "because", 9}, {"two", "2", "`x`", 10}}
	if !slices.Equal(rows, want) {
		t.Errorf("got %+v, want %+v", rows, want)
	}
}

// TestLimitsOwned: every row of the limits table is owned by a group,
// every owned row is in the table, and every group's file calls Limits
// for it (each Limits call in turn fails unless it checks exactly the
// group's rows).
func TestLimitsOwned(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ReadTable(filepath.Join(root, LimitsDoc))
	if err != nil {
		t.Fatal(err)
	}
	inTable := map[string]bool{}
	for _, r := range rows {
		if inTable[r.What] {
			t.Errorf("%s:%d: row %q twice", LimitsDoc, r.Line, r.What)
		}
		inTable[r.What] = true
		g, ok := Owners[r.What]
		if !ok {
			t.Errorf("%s:%d: row %q is checked by no test: add it to doccheck.Owners and to its group's test", LimitsDoc, r.Line, r.What)
			continue
		}
		if !slices.Contains(Groups, g) {
			t.Errorf("row %q: group %q not in Groups", r.What, g.Name)
		}
	}
	for what := range Owners {
		if !inTable[what] {
			t.Errorf("doccheck.Owners names row %q, which %s lacks", what, LimitsDoc)
		}
	}
	for _, g := range Groups {
		src, err := os.ReadFile(filepath.Join(root, g.File))
		if err != nil {
			t.Errorf("group %s: %v", g.Name, err)
			continue
		}
		if call := "doccheck.Limits(t, doccheck." + g.Var + ","; !strings.Contains(string(src), call) {
			t.Errorf("%s does not call %s...) for group %s", g.File, call, g.Name)
		}
	}
}
