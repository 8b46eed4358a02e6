// A small Sarama client for tests/clients/test_sarama.py: Go's Sarama as Debian 12 ships it
// (golang-github-shopify-sarama-dev, 1.22.1), built in GOPATH mode over /usr/share/gocode
// without a module proxy:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama_client .
//
// Every subcommand uses sarama.NewConfig() as it comes, except what the subcommand needs
// (SyncProducer: Producer.Return.Successes; consumers: Offsets.Initial = OffsetOldest and
// Return.Errors) and -version (Config.Version; empty: Sarama's default, 0.8.2.0). It prints
// one JSON object on stdout, and on failure exits 1 with the error on stderr.
//
//	produce   -brokers B -topic T -n N                 SyncProducer: N messages, their offsets
//	group     -brokers B -topic T -group G -n N        consume N messages as group G, mark and
//	                                                   commit them, close cleanly
//	committed -brokers B -topic T -group G             G's committed offset per partition
//	topics    -brokers B                               ClusterAdmin.ListTopics
//
// group uses a ConsumerGroup where Sarama allows one (Version >= 0.10.2.0), otherwise the
// plain Consumer with an OffsetManager; -mode group|manager chooses.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type opts struct {
	brokers []string
	topic   string
	group   string
	n       int
	mode    string
	timeout time.Duration
	conf    *sarama.Config
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sarama_client produce|group|committed|topics [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated host:port list")
	topic := fs.String("topic", "", "topic")
	group := fs.String("group", "", "consumer group")
	n := fs.Int("n", 10, "messages to produce or consume")
	version := fs.String("version", "", "Config.Version (e.g. 0.11.0.0, 2.2.0); empty: Sarama's default")
	mode := fs.String("mode", "auto", "group: auto, group (ConsumerGroup) or manager (Consumer + OffsetManager)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	debug := fs.Bool("debug", false, "Sarama's log on stderr")
	_ = fs.Parse(os.Args[2:])

	if *debug {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}
	conf := sarama.NewConfig()
	conf.ClientID = "sarama-test"
	if *version != "" {
		v, err := sarama.ParseKafkaVersion(*version)
		if err != nil {
			fail(err)
		}
		conf.Version = v
	}
	o := &opts{
		brokers: strings.Split(*brokers, ","),
		topic:   *topic,
		group:   *group,
		n:       *n,
		mode:    *mode,
		timeout: *timeout,
		conf:    conf,
	}

	var out interface{}
	var err error
	switch cmd {
	case "produce":
		out, err = produce(o)
	case "group":
		out, err = consume(o)
	case "committed":
		out, err = committed(o)
	case "topics":
		out, err = topics(o)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "sarama_client: %v\n", err)
	os.Exit(1)
}

type produced struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

func produce(o *opts) (interface{}, error) {
	o.conf.Producer.Return.Successes = true // a SyncProducer requires it
	p, err := sarama.NewSyncProducer(o.brokers, o.conf)
	if err != nil {
		return nil, fmt.Errorf("NewSyncProducer: %v", err)
	}
	var offsets []produced
	for i := 0; i < o.n; i++ {
		part, off, err := p.SendMessage(&sarama.ProducerMessage{
			Topic: o.topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value: sarama.StringEncoder(fmt.Sprintf("sarama-%d", i)),
		})
		if err != nil {
			_ = p.Close()
			return nil, fmt.Errorf("SendMessage %d: %v", i, err)
		}
		offsets = append(offsets, produced{part, off})
	}
	if err := p.Close(); err != nil {
		return nil, fmt.Errorf("close producer: %v", err)
	}
	return map[string]interface{}{"version": o.conf.Version.String(), "offsets": offsets}, nil
}

type message struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       string `json:"key"`
	Value     string `json:"value"`
}

func consume(o *opts) (interface{}, error) {
	o.conf.Consumer.Offsets.Initial = sarama.OffsetOldest
	o.conf.Consumer.Return.Errors = true
	mode := o.mode
	if mode == "auto" {
		mode = "manager"
		if o.conf.Version.IsAtLeast(sarama.V0_10_2_0) {
			mode = "group"
		}
	}
	var msgs []message
	var err error
	switch mode {
	case "group":
		msgs, err = consumeGroup(o)
	case "manager":
		msgs, err = consumeManager(o)
	default:
		err = fmt.Errorf("unknown -mode %q", o.mode)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(msgs, func(i, j int) bool {
		if msgs[i].Partition != msgs[j].Partition {
			return msgs[i].Partition < msgs[j].Partition
		}
		return msgs[i].Offset < msgs[j].Offset
	})
	return map[string]interface{}{"version": o.conf.Version.String(), "mode": mode, "messages": msgs}, nil
}

// handler is the ConsumerGroupHandler: marks every message and cancels the session once n are read.
type handler struct {
	mu     sync.Mutex
	n      int
	msgs   []message
	cancel context.CancelFunc
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		h.mu.Lock()
		if len(h.msgs) < h.n {
			h.msgs = append(h.msgs, message{m.Partition, m.Offset, string(m.Key), string(m.Value)})
			sess.MarkMessage(m, "")
		}
		done := len(h.msgs) >= h.n
		h.mu.Unlock()
		if done {
			h.cancel()
		}
	}
	return nil
}

// consumeGroup: a ConsumerGroup session reads n messages; ending the session (the context is
// cancelled) commits the marked offsets, then the group is left and closed.
func consumeGroup(o *opts) ([]message, error) {
	cg, err := sarama.NewConsumerGroup(o.brokers, o.group, o.conf)
	if err != nil {
		return nil, fmt.Errorf("NewConsumerGroup: %v", err)
	}
	var errMu sync.Mutex
	var errs []string
	errsDone := make(chan struct{})
	go func() {
		for e := range cg.Errors() {
			errMu.Lock()
			errs = append(errs, e.Error())
			errMu.Unlock()
		}
		close(errsDone)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	h := &handler{n: o.n, cancel: cancel}
	deadline := time.Now().Add(o.timeout)
	var consumeErr error
	for ctx.Err() == nil && time.Now().Before(deadline) {
		// Consume returns when the session ends: cancelled (n read), or a rebalance.
		sessCtx, sessCancel := context.WithDeadline(ctx, deadline)
		consumeErr = cg.Consume(sessCtx, []string{o.topic}, h)
		sessCancel()
		if consumeErr != nil {
			break
		}
	}
	cancel()
	closeErr := cg.Close()
	<-errsDone
	h.mu.Lock()
	got := len(h.msgs)
	msgs := h.msgs
	h.mu.Unlock()
	switch {
	case consumeErr != nil:
		return nil, fmt.Errorf("Consume: %v (errors: %v)", consumeErr, errs)
	case closeErr != nil:
		return nil, fmt.Errorf("close consumer group: %v (errors: %v)", closeErr, errs)
	case len(errs) > 0:
		return nil, fmt.Errorf("consumer group errors: %s", strings.Join(errs, "; "))
	case got < o.n:
		return nil, fmt.Errorf("read %d of %d messages in %v", got, o.n, o.timeout)
	}
	return msgs, nil
}

// consumeManager: the plain Consumer from the offsets an OffsetManager fetched for the group
// (OffsetFetch), every message marked, the OffsetManager closed (its last OffsetCommit).
func consumeManager(o *opts) ([]message, error) {
	client, err := sarama.NewClient(o.brokers, o.conf)
	if err != nil {
		return nil, fmt.Errorf("NewClient: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(o.topic)
	if err != nil {
		return nil, fmt.Errorf("Partitions(%s): %v", o.topic, err)
	}
	om, err := sarama.NewOffsetManagerFromClient(o.group, client)
	if err != nil {
		return nil, fmt.Errorf("NewOffsetManagerFromClient: %v", err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("NewConsumerFromClient: %v", err)
	}

	type source struct {
		pom sarama.PartitionOffsetManager
		pc  sarama.PartitionConsumer
	}
	var sources []source
	var errs []string
	var errMu sync.Mutex
	var drained sync.WaitGroup
	record := func(what string, e error) {
		errMu.Lock()
		errs = append(errs, fmt.Sprintf("%s: %v", what, e))
		errMu.Unlock()
	}
	msgCh := make(chan *sarama.ConsumerMessage)
	for _, p := range parts {
		pom, err := om.ManagePartition(o.topic, p)
		if err != nil {
			return nil, fmt.Errorf("ManagePartition(%s, %d): %v", o.topic, p, err)
		}
		drained.Add(1)
		go func() {
			defer drained.Done()
			for e := range pom.Errors() {
				record("offset manager", e)
			}
		}()
		next, _ := pom.NextOffset()
		pc, err := consumer.ConsumePartition(o.topic, p, next)
		if err != nil {
			return nil, fmt.Errorf("ConsumePartition(%s, %d, %d): %v", o.topic, p, next, err)
		}
		drained.Add(1)
		go func() {
			defer drained.Done()
			for e := range pc.Errors() {
				record("partition consumer", e)
			}
		}()
		go func() {
			for m := range pc.Messages() {
				msgCh <- m
			}
		}()
		sources = append(sources, source{pom, pc})
	}
	byPartition := map[int32]sarama.PartitionOffsetManager{}
	for i, p := range parts {
		byPartition[p] = sources[i].pom
	}

	var msgs []message
	timer := time.NewTimer(o.timeout)
	defer timer.Stop()
	for len(msgs) < o.n {
		select {
		case m := <-msgCh:
			msgs = append(msgs, message{m.Partition, m.Offset, string(m.Key), string(m.Value)})
			byPartition[m.Partition].MarkOffset(m.Offset+1, "")
		case <-timer.C:
			errMu.Lock()
			e := append([]string(nil), errs...)
			errMu.Unlock()
			return nil, fmt.Errorf("read %d of %d messages in %v (errors: %v)", len(msgs), o.n, o.timeout, e)
		}
	}
	// Stop consuming (the forwarders may hold one more message each: let them go).
	go func() {
		for range msgCh {
		}
	}()
	for _, s := range sources {
		s.pc.AsyncClose()
	}
	// Closing the OffsetManager commits what was marked (retrying up to Offsets.Retry.Max),
	// then releases the partition managers: their error channels close.
	for _, s := range sources {
		s.pom.AsyncClose()
	}
	if err := om.Close(); err != nil {
		record("close offset manager", err)
	}
	if err := consumer.Close(); err != nil {
		record("close consumer", err)
	}
	drained.Wait()
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return msgs, nil
}

// committed: the group's offsets by partition as the OffsetManager reads them: OffsetFetch
// (version 1, as Sarama's OffsetManager sends it) to the coordinator FindCoordinator names.
func committed(o *opts) (interface{}, error) {
	client, err := sarama.NewClient(o.brokers, o.conf)
	if err != nil {
		return nil, fmt.Errorf("NewClient: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(o.topic)
	if err != nil {
		return nil, fmt.Errorf("Partitions(%s): %v", o.topic, err)
	}
	coord, err := client.Coordinator(o.group)
	if err != nil {
		return nil, fmt.Errorf("Coordinator(%s): %v", o.group, err)
	}
	req := &sarama.OffsetFetchRequest{Version: 1, ConsumerGroup: o.group}
	for _, p := range parts {
		req.AddPartition(o.topic, p)
	}
	resp, err := coord.FetchOffset(req)
	if err != nil {
		return nil, fmt.Errorf("OffsetFetch: %v", err)
	}
	out := map[string]int64{}
	for _, p := range parts {
		b := resp.GetBlock(o.topic, p)
		if b == nil {
			return nil, fmt.Errorf("OffsetFetch: no answer for %s/%d", o.topic, p)
		}
		if b.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("OffsetFetch %s/%d: %v", o.topic, p, b.Err)
		}
		out[fmt.Sprint(p)] = b.Offset
	}
	return map[string]interface{}{"version": o.conf.Version.String(), "committed": out}, nil
}

type topicInfo struct {
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int16             `json:"replication_factor"`
	Configs           map[string]string `json:"configs"`
}

// topics: ClusterAdmin.ListTopics, which sends Metadata for all topics then one
// DescribeConfigs for all of them (non-default configs are returned).
func topics(o *opts) (interface{}, error) {
	admin, err := sarama.NewClusterAdmin(o.brokers, o.conf)
	if err != nil {
		return nil, fmt.Errorf("NewClusterAdmin: %v", err)
	}
	defer admin.Close()
	list, err := admin.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("ListTopics: %v", err)
	}
	out := map[string]topicInfo{}
	for name, d := range list {
		cfg := map[string]string{}
		for k, v := range d.ConfigEntries {
			if v != nil {
				cfg[k] = *v
			}
		}
		out[name] = topicInfo{d.NumPartitions, d.ReplicationFactor, cfg}
	}
	return map[string]interface{}{"version": o.conf.Version.String(), "topics": out}, nil
}
