// A Go groupcache node (github.com/golang/groupcache, as Debian packages it)
// for bench:groupcache: the original design of this cache, measured next to
// gcache-node in the same run. It serves the same gateway route as
// gcache-node, so one wrk script loads both:
//
//	GET  /v1/groups/{group}/keys/{key}  the value (groups default and cold: the getter makes it, value-bytes
//	                                     of 'c'; group zipf: the getter fetches it from the origin)
//	GET  /readyz                         200 once serving
//	GET  /v1/stats?group=NAME            the group's counters (JSON)
//	POST /v1/owners                      one key a line in, its owner's base URL a line out
//
// Peers talk groupcache's own protocol under /_groupcache/. The client
// transport keeps 128 idle connections per peer (Go's default keeps 2 and
// would open and close connections under 64 requests in flight): the best
// configuration for the hop, not the default one.
//
// The process exits when its standard input closes, so it never outlives
// the benchmark that started it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/golang/groupcache"
	"github.com/golang/groupcache/consistenthash"
)

// Points per node on the ring, as HTTPPool's default (with consistenthash's default hash, CRC-32), so /v1/owners agrees with the pool.
const replicas = 50

var (
	contentType = []string{"application/octet-stream"}
	keyRoute    = "/v1/groups/"
	keysSegment = "/keys/"
)

func main() {
	self := flag.String("self", "", "this node's base URL, e.g. http://127.0.0.1:9001")
	peers := flag.String("peers", "", "base URLs of every node, self included, comma-separated")
	valueBytes := flag.Int("value-bytes", 100, "bytes of every value the getter makes")
	defaultBytes := flag.Int64("default-bytes", 64<<20, "cache bytes of group default")
	coldBytes := flag.Int64("cold-bytes", 64<<20, "cache bytes of group cold; 0: no copies of keys other nodes own (nor of its own)")
	zipfBytes := flag.Int64("zipf-bytes", 16<<20, "cache bytes of group zipf")
	origin := flag.String("origin", "", "base URL of the origin that group zipf loads from: GET {origin}/zipf/{key}")
	maxProcs := flag.Int("gomaxprocs", 0, "GOMAXPROCS; 0: Go's default, one per CPU")
	flag.Parse()
	if *maxProcs > 0 {
		runtime.GOMAXPROCS(*maxProcs)
	}
	if *self == "" || *peers == "" {
		fmt.Fprintln(os.Stderr, "-self and -peers are required")
		os.Exit(2)
	}
	peerList := strings.Split(*peers, ",")

	value := []byte(strings.Repeat("c", *valueBytes))
	getter := groupcache.GetterFunc(func(_ context.Context, _ string, dest groupcache.Sink) error {
		return dest.SetBytes(value)
	})
	// A read-through load, as gcache-node's --origin makes it: one GET to the origin per miss, connections kept.
	originClient := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
	load := groupcache.GetterFunc(func(ctx context.Context, key string, dest groupcache.Sink) error {
		if *origin == "" {
			return fmt.Errorf("no -origin to load %q from", key)
		}
		request, err := http.NewRequestWithContext(ctx, http.MethodGet, *origin+"/zipf/"+url.PathEscape(key), nil)
		if err != nil {
			return err
		}
		response, err := originClient.Do(request)
		if err != nil {
			return err
		}
		defer response.Body.Close()
		body, err := io.ReadAll(response.Body)
		if err != nil {
			return err
		}
		if response.StatusCode != http.StatusOK {
			return fmt.Errorf("origin answered %d for %q", response.StatusCode, key)
		}
		return dest.SetBytes(body)
	})
	groups := map[string]*groupcache.Group{
		"default": groupcache.NewGroup("default", *defaultBytes, getter),
		"cold":    groupcache.NewGroup("cold", *coldBytes, getter),
		"zipf":    groupcache.NewGroup("zipf", *zipfBytes, load),
	}

	transport := &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
	}
	pool := groupcache.NewHTTPPool(*self)
	// Read by Set, which makes the peers' clients.
	pool.Transport = func(context.Context) http.RoundTripper { return transport }
	pool.Set(peerList...)
	ring := consistenthash.New(replicas, nil)
	ring.Add(peerList...)

	http.HandleFunc(keyRoute, func(w http.ResponseWriter, r *http.Request) {
		rest := r.URL.Path[len(keyRoute):]
		at := strings.Index(rest, keysSegment)
		if at < 0 {
			http.Error(w, "expected /v1/groups/{group}/keys/{key}", http.StatusNotFound)
			return
		}
		group := groups[rest[:at]]
		if group == nil {
			http.Error(w, "unknown group", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var view groupcache.ByteView
		if err := group.Get(r.Context(), rest[at+len(keysSegment):], groupcache.ByteViewSink(&view)); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		header := w.Header()
		header["Content-Type"] = contentType
		header["Content-Length"] = []string{strconv.Itoa(view.Len())}
		view.WriteTo(w)
	})
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ready\n")
	})
	http.HandleFunc("/v1/stats", func(w http.ResponseWriter, r *http.Request) {
		group := groups[r.URL.Query().Get("group")]
		if group == nil {
			http.Error(w, "unknown group", http.StatusNotFound)
			return
		}
		s := &group.Stats
		json.NewEncoder(w).Encode(map[string]int64{
			"gets":           s.Gets.Get(),
			"cacheHits":      s.CacheHits.Get(),
			"peerLoads":      s.PeerLoads.Get(),
			"peerErrors":     s.PeerErrors.Get(),
			"loads":          s.Loads.Get(),
			"localLoads":     s.LocalLoads.Get(),
			"serverRequests": s.ServerRequests.Get(),
		})
	})
	http.HandleFunc("/v1/owners", func(w http.ResponseWriter, r *http.Request) {
		// Read whole before answering: once an HTTP/1 answer has begun, Go's server stops reading the request.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := bufio.NewWriter(w)
		for _, key := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
			out.WriteString(ring.Get(key))
			out.WriteByte('\n')
		}
		out.Flush()
	})

	listener, err := net.Listen("tcp", strings.TrimPrefix(*self, "http://"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("READY %s\n", *self)
	if err := http.Serve(listener, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
