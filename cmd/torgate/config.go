package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// applyConfigFile reads a TOML file whose keys are the command's flag
// names (without dashes) and sets every flag the command line did not set:
// flags override the file. An unknown key or a bad value is an error that
// names the key.
//
// Keeping the file's vocabulary identical to the flags means the two can
// never drift apart: every flag is a config key and vice versa.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("config %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if key == "config" {
			return fmt.Errorf("config %s: field %q: a config file cannot name another", path, key)
		}
		f := fs.Lookup(key)
		if f == nil {
			return fmt.Errorf("config %s: unknown field %q", path, key)
		}
		if onCommandLine[key] {
			continue
		}
		if tables, ok := raw[key].([]map[string]any); ok {
			// [[onion]] port = 80, target = "10.152.152.11:80": an array
			// of tables is a flag that takes PORT=TARGET.
			if key != "onion" {
				return fmt.Errorf("config %s: field %q: want a string, number, boolean or array, got a table", path, key)
			}
			for i, tb := range tables {
				val, err := onionTable(tb)
				if err != nil {
					return fmt.Errorf("config %s: [[onion]] #%d: %w", path, i+1, err)
				}
				if err := fs.Set(key, val); err != nil {
					return fmt.Errorf("config %s: [[onion]] #%d: %w", path, i+1, err)
				}
			}
			continue
		}
		if arr, ok := raw[key].([]any); ok {
			if _, rep := f.Value.(repeatable); !rep {
				return fmt.Errorf("config %s: field %q: want a string, number or boolean, got an array", path, key)
			}
			for _, v := range arr {
				val, err := tomlScalar(v)
				if err != nil {
					return fmt.Errorf("config %s: field %q: %w", path, key, err)
				}
				if err := fs.Set(key, val); err != nil {
					return fmt.Errorf("config %s: field %q: %w", path, key, err)
				}
			}
			continue
		}
		val, err := tomlScalar(raw[key])
		if err != nil {
			return fmt.Errorf("config %s: field %q: %w", path, key, err)
		}
		if err := fs.Set(key, val); err != nil {
			return fmt.Errorf("config %s: field %q: %w", path, key, err)
		}
	}
	return nil
}

// configLANs returns the "lan" key of a config file: the LAN interfaces
// "torgate lan guard --config" guards. The file is checked as "torgate
// run --config" checks it, so that a file the guard accepts is one run
// accepts too.
func configLANs(path string) ([]string, error) {
	fs := flag.NewFlagSet("torgate run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f runFlags
	f.register(fs)
	if err := applyConfigFile(fs, path); err != nil {
		return nil, err
	}
	return f.lan, nil
}

// onionTable turns one [[onion]] table (port, target) into the --onion
// flag's PORT=TARGET.
func onionTable(tb map[string]any) (string, error) {
	port, ok := tb["port"].(int64)
	if !ok {
		return "", errors.New(`want port = <number>`)
	}
	target, ok := tb["target"].(string)
	if !ok {
		return "", errors.New(`want target = "ADDRESS:PORT"`)
	}
	for k := range tb {
		if k != "port" && k != "target" {
			return "", fmt.Errorf("unknown field %q (want port and target)", k)
		}
	}
	return fmt.Sprintf("%d=%s", port, target), nil
}

func tomlScalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	}
	return "", fmt.Errorf("want a string, number or boolean, got %T", v)
}

// repeatable marks a flag that may be given several times; its config key
// takes an array.
type repeatable interface{ repeatable() }

// stringList is a repeatable string flag ("--lan eth1 --lan eth2").
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error {
	if s == "" {
		return errors.New("empty value")
	}
	*l = append(*l, s)
	return nil
}
func (l *stringList) repeatable() {}
