// Package faketor is a stand-in tor binary for hermetic tests of a
// managed Tor: a test binary whose TestMain calls Main when it is run as
// tor (Script writes the wrapper that torctl starts as its TorPath).
//
// The process speaks as much of tor as torctl uses on a managed tor:
// "--verify-config" succeeds; otherwise it creates the cookie file,
// serves the control socket (PROTOCOLINFO, SAFECOOKIE, TAKEOWNERSHIP,
// SETEVENTS, GETINFO answering "bootstrapped, circuit established,
// network up", SIGNAL) and the SOCKS socket, where every CONNECT is
// served by bench/socksd's built-in sinks by port (7 echoes). Being a
// real process, it dies and hangs as tor does: SIGKILL closes its
// sockets, SIGSTOP leaves the control socket unanswered.
//
// It exits when its control connection closes after TAKEOWNERSHIP, as
// tor does, so that it never outlives the test's router.
package faketor

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/torgate/torgate/bench/socksd"
)

// Env is the environment variable that tells a test binary to run Main.
const Env = "TORGATE_FAKE_TOR"

// Script writes an executable wrapper into dir that runs the test binary
// (exe, usually os.Args[0]) as the fake tor, and returns its path, for
// torctl's TorPath.
func Script(dir, exe string) (string, error) {
	exe, err := filepath.Abs(exe)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "fake-tor")
	body := fmt.Sprintf("#!/bin/sh\n%s=1 exec '%s' \"$@\"\n", Env, exe)
	return path, os.WriteFile(path, []byte(body), 0o755)
}

// Main runs the fake tor with tor's command line args and returns the
// exit code.
func Main(args []string) int {
	opts := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--verify-config" {
			return 0
		}
		if strings.HasPrefix(a, "-") && i+1 < len(args) {
			opts[strings.TrimLeft(a, "-")] = args[i+1]
			i++
		}
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "fake tor:", err)
		return 1
	}
	return 0
}

// unixPath is the socket path of a SocksPort or ControlSocket value
// ("unix:/path FLAGS").
func unixPath(v string) (string, error) {
	f := strings.Fields(v)
	if len(f) == 0 || !strings.HasPrefix(f[0], "unix:") {
		return "", fmt.Errorf("want a unix: socket, got %q", v)
	}
	return strings.TrimPrefix(f[0], "unix:"), nil
}

func run(opts map[string]string) error {
	ctlPath, err := unixPath(opts["ControlSocket"])
	if err != nil {
		return fmt.Errorf("ControlSocket: %w", err)
	}
	socksPath, err := unixPath(opts["SocksPort"])
	if err != nil {
		return fmt.Errorf("SocksPort: %w", err)
	}
	cookieFile := opts["CookieAuthFile"]
	if cookieFile == "" {
		return fmt.Errorf("no CookieAuthFile")
	}
	cookie := make([]byte, 32)
	rand.Read(cookie)
	if err := os.WriteFile(cookieFile, cookie, 0o600); err != nil {
		return err
	}
	for _, p := range []string{ctlPath, socksPath} {
		os.Remove(p) // a previous run's, as tor removes a stale socket
	}
	sl, err := net.Listen("unix", socksPath)
	if err != nil {
		return err
	}
	if _, err := socksd.New(socksd.Config{Listener: sl}); err != nil {
		return err
	}
	cl, err := net.Listen("unix", ctlPath)
	if err != nil {
		return err
	}
	fmt.Println("fake tor: listening", ctlPath, socksPath)
	owner := make(chan struct{})
	for {
		c, err := cl.Accept()
		if err != nil {
			return err
		}
		go func() {
			owned := serve(c, cookie, cookieFile)
			if owned {
				close(owner) // the owner's connection closed: exit, as tor does
			}
		}()
		select {
		case <-owner:
			return nil
		default:
		}
	}
}

var (
	serverKey = []byte("Tor safe cookie authentication server-to-controller hash")
	clientKey = []byte("Tor safe cookie authentication controller-to-server hash")
)

func cookieMAC(key, cookie, cn, sn []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(cookie)
	m.Write(cn)
	m.Write(sn)
	return m.Sum(nil)
}

// info are the GETINFO answers: a bootstrapped tor.
var info = map[string]string{
	"status/bootstrap-phase":     `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`,
	"status/circuit-established": "1",
	"network-liveness":           "up",
	"version":                    "0.4.9.11",
}

// serve answers one control connection until it closes, and reports
// whether it took ownership.
func serve(c net.Conn, cookie []byte, cookieFile string) (owned bool) {
	defer c.Close()
	r := bufio.NewReader(c)
	send := func(lines ...string) {
		for _, l := range lines {
			c.Write([]byte(l + "\r\n"))
		}
	}
	authed := false
	var cn, sn []byte
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return owned
		}
		cmd, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		cmd = strings.ToUpper(cmd)
		if !authed && cmd != "PROTOCOLINFO" && cmd != "AUTHCHALLENGE" && cmd != "AUTHENTICATE" {
			send("514 Authentication required.")
			return owned
		}
		switch cmd {
		case "PROTOCOLINFO":
			send("250-PROTOCOLINFO 1", `250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="`+cookieFile+`"`, `250-VERSION Tor="0.4.9.11"`, "250 OK")
		case "AUTHCHALLENGE":
			parts := strings.Fields(arg)
			if len(parts) != 2 || parts[0] != "SAFECOOKIE" {
				send("513 Invalid argument")
				continue
			}
			cn, _ = hex.DecodeString(parts[1])
			sn = make([]byte, 32)
			rand.Read(sn)
			send(fmt.Sprintf("250 AUTHCHALLENGE SERVERHASH=%X SERVERNONCE=%X", cookieMAC(serverKey, cookie, cn, sn), sn))
		case "AUTHENTICATE":
			got, _ := hex.DecodeString(arg)
			if sn == nil || !hmac.Equal(got, cookieMAC(clientKey, cookie, cn, sn)) {
				send("515 Authentication failed")
				return owned
			}
			authed = true
			send("250 OK")
		case "GETINFO":
			var lines []string
			for _, k := range strings.Fields(arg) {
				v, ok := info[k]
				if !ok {
					lines = []string{fmt.Sprintf("552 Unrecognized key %q", k)}
					break
				}
				lines = append(lines, "250-"+k+"="+v)
			}
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "552") {
				lines = append(lines, "250 OK")
			}
			send(lines...)
		case "TAKEOWNERSHIP":
			owned = true
			send("250 OK")
		case "SETEVENTS", "SIGNAL", "SETCONF", "RESETCONF":
			send("250 OK")
		case "QUIT":
			send("250 closing connection")
			return owned
		default:
			send(fmt.Sprintf("510 Unrecognized command %q", cmd))
		}
	}
}
