package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Key cache layout: <KeyCacheDir>/<keyCacheVersion>/<node name>/ holds
// keys/ (copied into the DataDirectory as is), fingerprint and, for
// authorities, v3ident. Entries are keyed by node name only: identity keys
// do not depend on the address (tor-gencert is run without -a, so the
// certificate names none), and a random Block would otherwise never hit.
// Two networks sharing keys do not interfere: each only talks to the
// addresses in its own DirAuthority lines and consensus.
const keyCacheVersion = "v1"

// Authority certificates are made valid for certMonths; a cached one is
// regenerated when fewer than certMinLeft remain.
const (
	certMonths  = 12
	certMinLeft = 30 * 24 * time.Hour
)

// keygen creates (or loads from the cache) the keys of every relay.
type keygen struct {
	torPath, gencertPath string
	empty                string // empty regular file for -f and --defaults-torrc
	cacheRoot            string // "" = no cache
	cfg                  *Config
}

// run generates keys for all nodes in parallel and reports whether every
// node's keys came from the cache.
func (k *keygen) run(ctx context.Context, nodes []*node) (allCached bool, err error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		cached = 0
	)
	for _, nd := range nodes {
		wg.Go(func() {
			hit, err := k.node(ctx, nd)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", nd.name, err))
			}
			if hit {
				cached++
			}
		})
	}
	wg.Wait()
	return cached == len(nodes), errors.Join(errs...)
}

func (k *keygen) node(ctx context.Context, nd *node) (cached bool, err error) {
	entry := ""
	if k.cacheRoot != "" {
		entry = filepath.Join(k.cacheRoot, keyCacheVersion, nd.name)
		err := loadCachedKeys(entry, nd)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			k.cfg.Logger.Debug("testnet key cache entry unusable", "node", nd.name, "err", err)
		}
		// Drop whatever a failed copy left, so tor generates fresh keys.
		if err := os.RemoveAll(filepath.Join(nd.dir, "keys")); err != nil {
			return false, err
		}
	}
	if err := k.generate(ctx, nd); err != nil {
		return false, err
	}
	if entry != "" {
		if err := storeCachedKeys(entry, nd); err != nil {
			// A read-only cache only costs time.
			k.cfg.Logger.Warn("testnet key cache store failed", "node", nd.name, "err", err)
		}
	}
	return false, nil
}

// generate runs tor --list-fingerprint (relay identity) and, for
// authorities, tor-gencert (v3 authority identity, signing key and
// certificate) in the node's DataDirectory.
func (k *keygen) generate(ctx context.Context, nd *node) error {
	keys := filepath.Join(nd.dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, k.torPath,
		"--defaults-torrc", k.empty, "-f", k.empty, // tor refuses -f /dev/null
		"--list-fingerprint", "--quiet",
		"--DataDirectory", nd.dir,
		"--ORPort", nd.orAddr(),
		"--Address", nd.addr.String(),
		"--Nickname", nd.name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tor --list-fingerprint: %w: %s", err, bytes.TrimSpace(out))
	}
	// The lock would stop the real tor from starting in this directory.
	_ = os.Remove(filepath.Join(nd.dir, "lock"))
	fb, err := os.ReadFile(filepath.Join(nd.dir, "fingerprint"))
	if err != nil {
		return err
	}
	// The file reads "NICK HEX40".
	f := strings.Fields(string(fb))
	if len(f) < 2 {
		return fmt.Errorf("bad fingerprint file %q", fb)
	}
	if nd.fpr, err = checkHex40(strings.Join(f[1:], "")); err != nil {
		return fmt.Errorf("fingerprint file: %w", err)
	}
	if nd.role != roleAuthority {
		return nil
	}
	cert := filepath.Join(keys, "authority_certificate")
	gc := exec.CommandContext(ctx, k.gencertPath,
		"--create-identity-key", "--passphrase-fd", "0",
		"-m", fmt.Sprint(certMonths),
		"-i", filepath.Join(keys, "authority_identity_key"),
		"-s", filepath.Join(keys, "authority_signing_key"),
		"-c", cert)
	gc.Stdin = strings.NewReader("\n") // empty passphrase
	if out, err := gc.CombinedOutput(); err != nil {
		return fmt.Errorf("tor-gencert: %w: %s", err, bytes.TrimSpace(out))
	}
	nd.v3ident, _, err = parseCert(cert)
	return err
}

// parseCert returns the v3 identity fingerprint and expiry of an
// authority_certificate.
func parseCert(path string) (v3ident string, expires time.Time, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", time.Time{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "fingerprint "); ok {
			if v3ident, err = checkHex40(v); err != nil {
				return "", time.Time{}, fmt.Errorf("authority certificate: %w", err)
			}
		}
		if v, ok := strings.CutPrefix(line, "dir-key-expires "); ok {
			if expires, err = time.Parse(time.DateTime, v); err != nil {
				return "", time.Time{}, fmt.Errorf("authority certificate: %w", err)
			}
		}
	}
	if v3ident == "" || expires.IsZero() {
		return "", time.Time{}, fmt.Errorf("authority certificate %s: missing fingerprint or dir-key-expires", path)
	}
	return v3ident, expires, nil
}

func checkHex40(s string) (string, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) != 40 {
		return "", fmt.Errorf("fingerprint %q is not 40 hex digits", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("fingerprint %q: %w", s, err)
	}
	return s, nil
}

// loadCachedKeys copies a cache entry into nd's DataDirectory. An entry
// that does not exist yields an error wrapping os.ErrNotExist.
func loadCachedKeys(entry string, nd *node) error {
	fpr, v3, err := checkEntry(entry, nd.role)
	if err != nil {
		return err
	}
	if err := copyDir(filepath.Join(entry, "keys"), filepath.Join(nd.dir, "keys")); err != nil {
		return err
	}
	nd.fpr, nd.v3ident = fpr, v3
	return nil
}

// checkEntry returns the fingerprints of a usable cache entry.
func checkEntry(entry string, r role) (fpr, v3ident string, err error) {
	fb, err := os.ReadFile(filepath.Join(entry, "fingerprint"))
	if err != nil {
		return "", "", err
	}
	if fpr, err = checkHex40(string(fb)); err != nil {
		return "", "", err
	}
	if r == roleAuthority {
		var expires time.Time
		v3ident, expires, err = parseCert(filepath.Join(entry, "keys", "authority_certificate"))
		if err != nil {
			return "", "", err
		}
		if time.Until(expires) < certMinLeft {
			return "", "", fmt.Errorf("authority certificate expires %v", expires)
		}
	}
	return fpr, v3ident, nil
}

// storeCachedKeys writes nd's keys as a cache entry. The entry is built
// under a temporary name and renamed into place, so a concurrent reader
// sees either nothing or a complete entry.
func storeCachedKeys(entry string, nd *node) error {
	root := filepath.Dir(entry)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(root, "."+nd.name+"-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := copyDir(filepath.Join(nd.dir, "keys"), filepath.Join(tmp, "keys")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "fingerprint"), []byte(nd.fpr+"\n"), 0o600); err != nil {
		return err
	}
	// A usable entry stored meanwhile by another process is kept; a stale
	// one (expiring certificate, damaged) is moved aside.
	if _, _, err := checkEntry(entry, nd.role); err == nil {
		return nil
	}
	if _, err := os.Stat(entry); err == nil {
		old, err := os.MkdirTemp(root, "."+nd.name+"-old-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(old)
		if err := os.Rename(entry, filepath.Join(old, "entry")); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, entry); err != nil {
		// Another process stored the same entry first; theirs is as good.
		if _, statErr := os.Stat(entry); statErr == nil {
			return nil
		}
		return err
	}
	return nil
}

// copyDir copies the regular files of src (one level: tor's keys/
// directory is flat) into dst, with private permissions as tor requires.
func copyDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
