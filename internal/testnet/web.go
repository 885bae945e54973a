package testnet

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// WebBody is the body the web server returns for "/".
const WebBody = "torgate-testnet-ok\n"

// MaxWebBytes caps /bytes?n=, so a typo cannot stream forever.
const MaxWebBytes = 1 << 30

// webHandler serves the test endpoints:
//
//	GET  /           WebBody
//	GET  /bytes?n=N  N bytes (a repeating pattern), Content-Length set
//	GET  /whoami     the peer's address (an exit's, or the onion host's)
//	POST /sink       reads the body and returns its length in bytes
func webHandler() http.Handler {
	// One shared, read-only block for /bytes.
	block := make([]byte, 32<<10)
	for i := range block {
		block[i] = byte('a' + i%26)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, WebBody)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxWebBytes {
			http.Error(w, fmt.Sprintf("n must be in 0..%d", MaxWebBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			chunk := block[:min(n, int64(len(block)))]
			if _, err := w.Write(chunk); err != nil {
				return
			}
			n -= int64(len(chunk))
		}
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.RemoteAddr+"\n")
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%d\n", n)
	})
	return mux
}

func newWebServer() *http.Server {
	return &http.Server{
		Handler: webHandler(),
		// Tor circuits take seconds; be generous but bounded.
		ReadHeaderTimeout: 60 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}
