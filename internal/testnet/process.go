package testnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long Close waits after SIGTERM before SIGKILL. With
// ShutdownWaitLength 0 tor exits within milliseconds of SIGTERM.
const stopGrace = 5 * time.Second

// process is one running tor.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *os.File      // stdout+stderr, closed after exit
	done chan struct{} // closed when the process has been reaped
	err  error         // exit status; valid after done
}

// startTor starts tor with torrc, sending its stdout and stderr (which only
// carry messages from before the Log line takes effect) to a file in the
// node's directory.
func startTor(torPath, emptyFile string, nd *node) (*process, error) {
	out, err := os.OpenFile(filepath.Join(nd.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", nd.name, err)
	}
	// --defaults-torrc: an empty file, so that no system-wide
	// torrc-defaults can change the network.
	cmd := exec.Command(torPath, "--defaults-torrc", emptyFile, "-f", nd.torrcPath())
	cmd.Dir = nd.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", nd.name, err)
	}
	p := &process{name: nd.name, cmd: cmd, out: out, done: make(chan struct{})}
	go p.waitLoop()
	return p, nil
}

// waitLoop reaps the process.
func (p *process) waitLoop() {
	p.err = p.cmd.Wait()
	p.out.Close()
	close(p.done)
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to stopGrace, then kills. It returns an
// error only if the process could not be reaped.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
		return fmt.Errorf("stop %s: pid %d did not exit after SIGKILL", p.name, p.pid())
	}
}

// rssBytes reads VmRSS of pid from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("pid %d: unexpected VmRSS line %q", pid, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: VmRSS: %w", pid, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc status", pid)
}

// logTail returns the last n lines of a tor log, for error messages: the
// caller's t.TempDir is gone by the time anyone could read the file.
func logTail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	// Logs of a network that failed to start are small; cap anyway.
	const maxRead = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, 0)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// StartError is returned by Start when a step fails. It carries the end of
// the relevant node's tor log, since the caller's directory is usually
// deleted by the time anyone looks.
type StartError struct {
	Stage   string   // e.g. "keygen", "consensus", "client bootstrap"
	Node    string   // node name, or "" when no single node is at fault
	Err     error    // the cause
	LogTail []string // last lines of Node's notice log
}

func (e *StartError) Error() string {
	var b strings.Builder
	b.WriteString("testnet: ")
	b.WriteString(e.Stage)
	if e.Node != "" {
		b.WriteString(" (")
		b.WriteString(e.Node)
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if len(e.LogTail) > 0 {
		b.WriteString("\n\tlog tail:\n\t\t")
		b.WriteString(strings.Join(e.LogTail, "\n\t\t"))
	}
	return b.String()
}

func (e *StartError) Unwrap() error { return e.Err }

// errProcessExited means a tor exited while the network was starting.
var errProcessExited = errors.New("tor process exited")
