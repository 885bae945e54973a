package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/admin"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
)

// TestRunManagedTor drives "torgate run" as a user would, in managed
// mode: it starts its own tor, which joins a private Tor network through
// --torrc; the admin endpoint reports readiness once tor has bootstrapped;
// "torgate newnym" works per source and globally (and hits Tor's rate
// limit); cancelling run stops tor. Traffic through the router is the
// business of the root package's TestTorIntegration: here the TUN is
// created in the host namespace (run has no way to put it elsewhere), so
// it gets no address and no route, and carries nothing.
func TestRunManagedTor(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	testnet.Require(t)
	sctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	n, err := testnet.Start(sctx, testnet.Config{Dir: reachableTempDir(t), Logger: slog.New(slog.DiscardHandler)})
	cancel()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { n.Close() })

	var rnd [3]byte
	rand.Read(rnd[:])
	tunName := "tgrun" + hex.EncodeToString(rnd[:])
	// The managed tor runs as debian-tor (torgate's default as root): it
	// must reach its DataDirectory and read the --torrc file.
	state := reachableTempDir(t)
	torrc := filepath.Join(state, "extra.torrc")
	if err := os.WriteFile(torrc, []byte(strings.Join(n.ClientTorrc(), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	adminSock := filepath.Join(state, "admin.sock")

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var logs testlog.Buffer
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		// In process: the test binary may link cgo (it does wherever a C
		// compiler is), which cannot drop capabilities; that is
		// TestRunDropsPrivileges' business, on a CGO_ENABLED=0 build.
		done <- run(ctx, []string{"run", "--keep-privileges", "--tun", tunName, "--addr", "", "--state-dir", state,
			"--torrc", torrc, "--admin", adminSock}, io.Discard, &logs)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("torgate log:\n%s", logs.String())
		}
	}()

	client, base, err := admin.Client(adminSock)
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("torgate run ended: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(began) > 90*time.Second {
			t.Fatal("not ready after 90s")
		}
	}
	t.Logf("ready %v after torgate run started", time.Since(began).Round(time.Millisecond))
	checkTorUser(t, logs.String())
	if !strings.Contains(logs.String(), "tor bootstrap") || !strings.Contains(logs.String(), "progress=100") {
		t.Errorf("no bootstrap progress lines in the log")
	}

	var stdout strings.Builder
	// No workstation is behind this TUN: a new identity for one is
	// refused (issue 22), and the router stays up for the others.
	if err := run(t.Context(), []string{"newnym", "--admin", adminSock, "10.152.152.11"}, &stdout, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown workstation: 10.152.152.11") {
		t.Fatalf("newnym SOURCE of no workstation: %v, want unknown workstation", err)
	}
	if err := run(t.Context(), []string{"newnym", "--admin", adminSock}, &stdout, io.Discard); err != nil {
		t.Fatalf("newnym: %v", err)
	}
	err = run(t.Context(), []string{"newnym", "--admin", adminSock}, &stdout, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "rate-limits NEWNYM") {
		t.Fatalf("second newnym within 10s: %v, want Tor's rate limit", err)
	}
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "flows") {
		t.Errorf("/metrics has no flow metrics:\n%.500s", metrics)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("torgate run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("torgate run did not stop")
	}
	pid := torPID(t, logs.String())
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("tor %d still runs after torgate run returned", pid)
	}
	if strings.Contains(stdout.String(), "new identity for 10.152.152.11") || !strings.Contains(stdout.String(), "new identity for every source") {
		t.Errorf("newnym output %q", stdout.String())
	}
}

// reachableTempDir is a t.TempDir that another user (the managed tor's)
// can pass through: t.TempDir and its parent are 0700.
func reachableTempDir(t *testing.T) string {
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// torPID finds the managed tor's PID in torgate's log (the first start).
func torPID(t *testing.T, logs string) int {
	t.Helper()
	m := regexp.MustCompile(`msg="tor started".* pid=(\d+)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatal("no tor PID in the log")
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// procStatus returns the fields of /proc/PID/status by name.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for l := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(l, ":")
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// checkTorUser: torgate, as root, runs its managed tor as debian-tor.
func checkTorUser(t *testing.T, logs string) {
	t.Helper()
	u, err := user.Lookup(defaultTorUser)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no %s user: %v", defaultTorUser, err)
		}
		t.Logf("no %s user: tor's uid not checked", defaultTorUser)
		return
	}
	pid := torPID(t, logs)
	uid := strings.Fields(procStatus(t, pid)["Uid"])
	if len(uid) != 4 || uid[0] != u.Uid || uid[1] != u.Uid || uid[2] != u.Uid {
		t.Fatalf("managed tor %d runs as Uid %v, want %s (%s) throughout", pid, uid, u.Uid, defaultTorUser)
	}
	t.Logf("managed tor %d runs as uid %s (%s)", pid, u.Uid, defaultTorUser)
}
