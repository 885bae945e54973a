//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/torgate/torgate/internal/admin"
)

// GoPeak is the peak, over one run (or over a row's runs), of what a Go
// router's /metrics reports about its own memory and goroutines: the
// client_golang Go and process collectors, which torgate registers
// unprefixed. It is sampled every scrapeInterval, so a spike shorter than
// that can be missed (VmHWM, RouterPeakRSS, cannot miss one).
type GoPeak struct {
	RSSMiB       float64 `json:"process_resident_memory_mib"` // process_resident_memory_bytes
	HeapInuseMiB float64 `json:"go_memstats_heap_inuse_mib"`  // go_memstats_heap_inuse_bytes
	HeapAllocMiB float64 `json:"go_memstats_heap_alloc_mib"`  // go_memstats_heap_alloc_bytes
	SysMiB       float64 `json:"go_memstats_sys_mib"`         // go_memstats_sys_bytes
	Goroutines   float64 `json:"go_goroutines"`               // go_goroutines
	Scrapes      int     `json:"scrapes"`                     // successful scrapes
}

// scrapeInterval is how often a run scrapes the router's /metrics: often
// enough to catch the peak of a 3-10 s run, rare enough that the router
// spends next to nothing serving it (one scrape of torgate is a few
// hundred µs of CPU).
const scrapeInterval = time.Second

// goPeakMetrics maps the scraped names to GoPeak's fields and scales.
var goPeakMetrics = map[string]func(g *GoPeak) *float64{
	"process_resident_memory_bytes": func(g *GoPeak) *float64 { return &g.RSSMiB },
	"go_memstats_heap_inuse_bytes":  func(g *GoPeak) *float64 { return &g.HeapInuseMiB },
	"go_memstats_heap_alloc_bytes":  func(g *GoPeak) *float64 { return &g.HeapAllocMiB },
	"go_memstats_sys_bytes":         func(g *GoPeak) *float64 { return &g.SysMiB },
	"go_goroutines":                 func(g *GoPeak) *float64 { return &g.Goroutines },
}

// observe raises g's fields to one scrape's values (Prometheus text
// format). It returns an error, and changes nothing, if the scrape has
// none of the metrics.
func (g *GoPeak) observe(r io.Reader) error {
	var got GoPeak
	n := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// "name value [timestamp]"; the metrics read here have no labels.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		field, ok := goPeakMetrics[f[0]]
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return fmt.Errorf("metric %s: %w", f[0], err)
		}
		if strings.HasSuffix(f[0], "_bytes") {
			v /= 1 << 20
		}
		*field(&got) = v
		n++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no Go or process metrics in the scrape")
	}
	g.raise(got)
	g.Scrapes++
	return nil
}

// raise sets each field of g to the larger of g's and o's.
func (g *GoPeak) raise(o GoPeak) {
	g.RSSMiB = max(g.RSSMiB, o.RSSMiB)
	g.HeapInuseMiB = max(g.HeapInuseMiB, o.HeapInuseMiB)
	g.HeapAllocMiB = max(g.HeapAllocMiB, o.HeapAllocMiB)
	g.SysMiB = max(g.SysMiB, o.SysMiB)
	g.Goroutines = max(g.Goroutines, o.Goroutines)
}

// scraper polls one router's /metrics during a run.
type scraper struct {
	client *http.Client
	url    string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	peak   GoPeak // guarded by mu
	err    error  // the last scrape error; guarded by mu
}

// startScrape scrapes addr (the router's admin endpoint in torgate's
// syntax: unix:PATH or a loopback host:port) now and then every
// scrapeInterval until stop.
func startScrape(ctx context.Context, addr string) (*scraper, error) {
	client, base, err := admin.Client(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &scraper{client: client, url: base + "/metrics", cancel: cancel, done: make(chan struct{})}
	go s.scrapeLoop(ctx)
	return s, nil
}

func (s *scraper) scrapeLoop(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(scrapeInterval)
	defer t.Stop()
	for {
		s.scrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *scraper) scrapeOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		s.setErr(err)
		return
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.setErr(err)
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.setErr(fmt.Errorf("GET /metrics: %s", resp.Status))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.peak.observe(resp.Body); err != nil {
		s.err = err
	}
}

func (s *scraper) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// stop takes a last scrape and returns the run's peak; err is the last
// failure when no scrape succeeded.
func (s *scraper) stop(ctx context.Context) (GoPeak, error) {
	s.cancel()
	<-s.done
	s.scrapeOnce(ctx)
	s.client.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peak.Scrapes == 0 {
		return s.peak, fmt.Errorf("scrape %s: %v", s.url, s.err)
	}
	return s.peak, nil
}
