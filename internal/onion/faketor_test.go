package onion

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeControl is a control port on a unix socket speaking just enough for
// torctl's attach mode (PROTOCOLINFO with no authentication, AUTHENTICATE,
// SETEVENTS, GETINFO of the readiness keys) and ADD_ONION, which it
// records per connection. Like tor, it refuses a key that another open
// connection holds (550 collision) and frees a connection's services when
// it closes.
type fakeControl struct {
	t    *testing.T
	path string
	ln   net.Listener

	mu    sync.Mutex
	ids   map[string]string   // ADD_ONION key argument -> ServiceID to answer
	held  map[string]*fakeCtl // key -> the connection holding it
	adds  [][]string          // ADD_ONION lines, per connection in order of connecting
	conns []*fakeCtl
	// refuse makes ADD_ONION answer this reply line instead (e.g. a 512).
	refuse string
	// holdAfterClose keeps a closed connection's keys for that many more
	// ADD_ONION attempts (a tor that has not reaped it yet).
	holdAfterClose int
}

type fakeCtl struct {
	nc  net.Conn
	idx int
}

func newFakeControl(t *testing.T) *fakeControl {
	t.Helper()
	f := &fakeControl{t: t, path: filepath.Join(t.TempDir(), "ctl"), ids: map[string]string{}, held: map[string]*fakeCtl{}}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	go f.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		f.dropAll()
	})
	return f
}

// know tells the fake which ServiceID a key has (it cannot derive it).
func (f *fakeControl) know(key, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids[key] = id
}

func (f *fakeControl) acceptLoop() {
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		c := &fakeCtl{nc: nc, idx: len(f.adds)}
		f.adds = append(f.adds, nil)
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go f.serve(c)
	}
}

// dropAll closes every connection, as a restarting tor would.
func (f *fakeControl) dropAll() {
	f.mu.Lock()
	cs := f.conns
	f.conns = nil
	f.mu.Unlock()
	for _, c := range cs {
		c.nc.Close()
	}
}

// addsOn returns the ADD_ONION lines connection i sent.
func (f *fakeControl) addsOn(i int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.adds) {
		return nil
	}
	return append([]string(nil), f.adds[i]...)
}

func (f *fakeControl) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.adds)
}

func (f *fakeControl) serve(c *fakeCtl) {
	defer func() {
		c.nc.Close()
		f.mu.Lock()
		if f.holdAfterClose == 0 {
			for k, h := range f.held {
				if h == c {
					delete(f.held, k)
				}
			}
		}
		f.mu.Unlock()
	}()
	r := bufio.NewReader(c.nc)
	w := func(lines ...string) {
		for _, l := range lines {
			fmt.Fprintf(c.nc, "%s\r\n", l)
		}
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(cmd) {
		case "PROTOCOLINFO":
			w("250-PROTOCOLINFO 1", "250-AUTH METHODS=NULL", `250-VERSION Tor="0.4.9.11"`, "250 OK")
		case "AUTHENTICATE", "SETEVENTS":
			w("250 OK")
		case "GETINFO":
			vals := map[string]string{
				"status/bootstrap-phase":     `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`,
				"status/circuit-established": "1",
				"network-liveness":           "up",
			}
			var out []string
			for _, k := range strings.Fields(arg) {
				out = append(out, "250-"+k+"="+vals[k])
			}
			w(append(out, "250 OK")...)
		case "ADD_ONION":
			f.mu.Lock()
			f.adds[c.idx] = append(f.adds[c.idx], line)
			key, _, _ := strings.Cut(arg, " ")
			id, known := f.ids[key]
			h := f.held[key]
			refuse := f.refuse
			var reply []string
			switch {
			case refuse != "":
				reply = []string{refuse}
			case !known:
				reply = []string{"513 Invalid key"}
			case h != nil && h != c:
				reply = []string{"550 Onion address collision"}
				if f.holdAfterClose > 0 {
					f.holdAfterClose--
					if f.holdAfterClose == 0 {
						delete(f.held, key)
					}
				}
			default:
				f.held[key] = c
				reply = []string{"250-ServiceID=" + id, "250 OK"}
			}
			f.mu.Unlock()
			w(reply...)
		default:
			w(fmt.Sprintf("510 Unrecognized command %q", cmd))
		}
	}
}
