package dns

import (
	"strconv"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate/internal/flow"
)

// reportQPS adds queries per second to a benchmark's output.
func reportQPS(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkHandleAutomap answers A for a name already in the table: the
// common case, one map lookup under the lock.
func BenchmarkHandleAutomap(b *testing.B) {
	s := newServer(b, Config{})
	q := buildQuery(b, "www.example.com.", dnsmessage.TypeA, queryOpts{edns: 1232})
	resp := make([]byte, 0, 512)
	ctx := b.Context()
	if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
			b.Fatal(err)
		}
	}
	reportQPS(b)
}

// BenchmarkHandleAutomapParallel is BenchmarkHandleAutomap from
// GOMAXPROCS goroutines, to show the cost of the table lock.
func BenchmarkHandleAutomapParallel(b *testing.B) {
	s := newServer(b, Config{})
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		q := buildQuery(b, "www.example.com.", dnsmessage.TypeA, queryOpts{})
		resp := make([]byte, 0, 512)
		for pb.Next() {
			if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportQPS(b)
}

// BenchmarkHandleAutomapNewName answers A for a name never seen before,
// with the table full, so that every query also recycles the LRU entry:
// the worst case. One source owns the whole table here.
func BenchmarkHandleAutomapNewName(b *testing.B) {
	s := newServer(b, Config{MaxEntriesPerSource: DefaultMaxEntries})
	q := buildQuery(b, "n0000000000.example.com.", dnsmessage.TypeA, queryOpts{})
	resp := make([]byte, 0, 512)
	ctx := b.Context()
	i := 0
	next := func() {
		copy(q[14:24], strconv.Itoa(1_000_000_000+i)) // after the length byte and "n"
		i++
	}
	for range DefaultMaxEntries { // fill the table
		next()
		if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		next()
		if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
			b.Fatal(err)
		}
	}
	reportQPS(b)
	if s.Len() != DefaultMaxEntries {
		b.Fatalf("Len = %d", s.Len())
	}
}

// BenchmarkHandlePTR answers PTR for a mapped IPv6 address.
func BenchmarkHandlePTR(b *testing.B) {
	s := newServer(b, Config{})
	ip := answerAddr(b, askName(b, s, srcA, "www.example.com.", dnsmessage.TypeAAAA))
	q := buildQuery(b, reverseName(ip), dnsmessage.TypePTR, queryOpts{})
	resp := make([]byte, 0, 512)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Handle(ctx, srcA, q, true, resp); err != nil {
			b.Fatal(err)
		}
	}
	reportQPS(b)
}

// BenchmarkLookup is the tunnel's side: virtual address to name.
func BenchmarkLookup(b *testing.B) {
	s := newServer(b, Config{})
	ip := answerAddr(b, askName(b, s, srcA, "www.example.com.", dnsmessage.TypeA))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := s.Lookup(srcA, ip); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkServeDatagram is one UDP query through the serving side: the
// pooled copy, the goroutine, Handle, reply. One op is one answer.
func BenchmarkServeDatagram(b *testing.B) {
	s := newServer(b, Config{})
	q := buildQuery(b, "www.example.com.", dnsmessage.TypeA, queryOpts{})
	done := make(replies, 1)
	reply := done.reply()
	b.ReportAllocs()
	for b.Loop() {
		s.ServeDatagram(srcA, q, 1472, reply)
		<-done
	}
	reportQPS(b)
}

// BenchmarkServeDatagramRefused is a query over its workstation's share
// (a flood): dropped without allocating.
func BenchmarkServeDatagramRefused(b *testing.B) {
	s := newServer(b, Config{Workers: 1})
	s.serve.udp.Acquire(srcA) // the one worker is busy
	q := buildQuery(b, "www.example.com.", dnsmessage.TypeA, queryOpts{})
	reply := flow.Reply{} // sends nothing
	b.ReportAllocs()
	for b.Loop() {
		s.ServeDatagram(srcA, q, 1472, reply)
	}
}
