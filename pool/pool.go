package pool

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyworkers/pyworkers/channels"
	"github.com/pyworkers/pyworkers/cpython"
)

// Sentinel errors, wrapped by the errors of this package (test with errors.Is).
var (
	// ErrClosed: the pool is closed or closing; a task accepted before Close but not started by
	// then ends with it too.
	ErrClosed = errors.New("pool: closed")
	// ErrQueueFull: the queue is at Options.QueueSize and Options.FailFast is set.
	ErrQueueFull = errors.New("pool: queue full")
	// ErrNoGroup: a call addressed to a group the pool does not have.
	ErrNoGroup = errors.New("pool: no such group")
	// ErrWorkerLost: the task raised SystemExit (or a subclass) or MemoryError, which end its
	// worker's interpreter; a fresh one takes its place (see ErrNoWorkers for one that cannot
	// start).
	ErrWorkerLost = errors.New("pool: worker lost and replaced")
	// ErrNoWorkers: none of the group's workers can start again (each one's start failed
	// three times or more in a row since it was replaced: its Setup or Preload raised, or
	// its interpreter could not be made): calls fail at once, and those waiting in the queue
	// with them, until one starts; the error has the last failure's text, as
	// GroupStats.RestartError. (A Setup that hangs is no failure: calls wait for it.)
	ErrNoWorkers = errors.New("pool: no worker can start")
)

// Options configures a pool. The zero value is a pool of runtime.GOMAXPROCS(0) workers.
type Options struct {
	// Workers is the number of interpreters of the default group (default: runtime.GOMAXPROCS(0),
	// the CPUs the process may use: a container's CPU limit, not the host's count).
	Workers int
	// Setup is Python source run in __main__ of every worker before it takes work, e.g.
	// "import numpy_free_lib; MODEL = load()". A failure fails New (or the worker's restart).
	Setup string
	// Preload lists modules every worker imports before it takes work.
	Preload []string
	// Path is put at the front of sys.path in every worker (an entry already on sys.path, as
	// site-packages, stays where it is).
	Path []string
	// Config is what pyworkers.config() returns inside every worker.
	Config any
	// QueueSize bounds the tasks waiting for a worker (0: unbounded). When the queue is full,
	// Call and Submit wait, or with FailFast return ErrQueueFull at once. A queued task whose
	// context ends leaves the count at once; its place in the underlying C queue is freed when
	// a worker passes it, so after 4×QueueSize+1024 such tasks while every worker stays busy,
	// Call and Submit wait (or fail fast) until the workers move on, whatever the count says.
	QueueSize int
	// FailFast makes Call, Submit, SubmitBatch and Check return ErrQueueFull at once when a
	// bounded queue is full, rather than wait for room; for every group of the pool. Map always
	// waits.
	FailFast bool
	// MaxTasksPerWorker recycles a worker (a fresh interpreter replaces it) after this many
	// tasks (0: never). From 10 up, each worker's limit is drawn between 90 % of it and it, so
	// that workers sharing a queue are not all replaced at once (the group would serve nothing
	// while the replacements ran Setup). The old interpreter ends in the background; threads
	// its code started that still run InterruptGrace later are interrupted (see Self-healing in
	// the package doc).
	MaxTasksPerWorker int
	// InterruptGrace is how long a cancelled task may take to stop, from its context's end (when
	// its interrupt is sent: the interrupt lands once the worker's GIL is free) before its
	// worker is given up and replaced (default 2s). The replaced interpreter is interrupted
	// again until it stops, then ended. While as many of a group's workers are given up as the
	// group has, a further one is replaced only when one of them ends (the group serves with
	// fewer workers meanwhile): calls blocked for good in C cost at most twice the interpreters.
	InterruptGrace time.Duration
	// Stdout and Stderr receive what workers print, in whole lines (default: the runtime's
	// cpython.Config.Stdout/Stderr, which are os.Stdout/Stderr unless Initialize set them); a
	// task's output that does not end its line goes out at the task's end (a batch's: at the
	// batch's end), see Output in package cpython.
	Stdout, Stderr io.Writer
	// Groups are named groups of workers besides the default one, each with its own workers,
	// set-up and queue ("one interpreter per model"); address them with Pool.Group. Fields left
	// zero in a group take the pool's values, except Setup, Preload and Config.
	Groups map[string]GroupOptions
	// Name, when set, publishes Stats as the expvar variable "pyworkers.pool.<Name>" once every
	// worker has started. A later pool with the same Name takes the variable over; New fails at
	// once if the name is an expvar variable of something else.
	Name string
}

// GroupOptions configures a named group of workers: as the fields of Options of the same
// names, for the group's own workers. Workers, QueueSize and MaxTasksPerWorker left zero take
// the pool's values (so a group cannot be unbounded, or never recycle, when the pool's are
// set); Setup, Preload and Config are the group's alone (zero: none).
type GroupOptions struct {
	Workers           int
	Setup             string
	Preload           []string
	Config            any
	QueueSize         int
	MaxTasksPerWorker int
}

// Pool is a set of warm own-GIL interpreters that run Python calls from Go. All methods are
// safe for concurrent use from any goroutine.
type Pool struct {
	opts    Options
	groups  map[string]*Group
	def     *Group
	closing atomic.Bool
	closed  chan struct{}
	close   sync.Once
	ended   chan struct{}  // closed once every slot has ended, after Close began
	slots   sync.WaitGroup // one per running slot goroutine (startSlot)
	slotMu  sync.Mutex     // orders slots.Add in startSlot before Close's slots.Wait
	// abort ends when CloseContext's context does (or Close has ended everything): it
	// interrupts what the ends of workers' interpreters wait for (threads their code started).
	abort    context.Context
	abortNow context.CancelFunc
	// restarts ends when Close begins: it interrupts a replacement worker's Preload and Setup
	// (no task's context reaches them), which would serve nothing then.
	restarts     context.Context
	stopRestarts context.CancelFunc
	started      time.Time
	procs        int32 // GOMAXPROCS when the pool was made (see Group.crowded)
}

// New starts a pool and returns when every worker is ready to take work (their interpreters are
// created in parallel). If a worker cannot start — its Setup raises, a Preload module cannot be
// imported — New interrupts the other workers' starts, ends what it started (threads their
// code left running get InterruptGrace, then an interrupt) and returns that error (a
// *cpython.PythonError with the traceback). It is NewContext with a context that never ends.
func New(opts Options) (*Pool, error) { return NewContext(context.Background(), opts) }

// NewContext is New under ctx: when ctx ends while workers start, their Preload imports and
// Setup code are interrupted (as a call's would be), everything started is ended, and the
// error wraps ctx.Err(). ctx governs the start only, not the pool's life.
func NewContext(ctx context.Context, opts Options) (*Pool, error) {
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Workers < 0 || opts.QueueSize < 0 || opts.MaxTasksPerWorker < 0 || opts.InterruptGrace < 0 {
		return nil, errors.New("pool: Workers, QueueSize, MaxTasksPerWorker and InterruptGrace must not be negative")
	}
	if opts.InterruptGrace == 0 {
		opts.InterruptGrace = 2 * time.Second
	}
	p := &Pool{opts: opts, groups: map[string]*Group{}, closed: make(chan struct{}), ended: make(chan struct{}), started: time.Now(),
		procs: int32(runtime.GOMAXPROCS(0))}
	p.abort, p.abortNow = context.WithCancel(context.Background())
	p.restarts, p.stopRestarts = context.WithCancel(context.Background())
	specs := map[string]GroupOptions{"": {
		Workers: opts.Workers, Setup: opts.Setup, Preload: opts.Preload, Config: opts.Config,
		QueueSize: opts.QueueSize, MaxTasksPerWorker: opts.MaxTasksPerWorker,
	}}
	for name, g := range opts.Groups {
		if name == "" {
			return nil, errors.New(`pool: a group needs a name ("" is the default group)`)
		}
		if g.Workers == 0 {
			g.Workers = opts.Workers
		}
		if g.QueueSize == 0 {
			g.QueueSize = opts.QueueSize
		}
		if g.MaxTasksPerWorker == 0 {
			g.MaxTasksPerWorker = opts.MaxTasksPerWorker
		}
		if g.Workers < 0 || g.QueueSize < 0 || g.MaxTasksPerWorker < 0 {
			return nil, fmt.Errorf("pool: group %q: Workers, QueueSize and MaxTasksPerWorker must not be negative", name)
		}
		specs[name] = g
	}
	if opts.Name != "" {
		if err := p.checkName(); err != nil { // a taken name fails before any worker starts
			return nil, err
		}
	}
	var firstErrs []error
	var mu sync.Mutex
	var ready sync.WaitGroup
	// The first start that fails interrupts the others: New's error is known, and a Setup that
	// takes long (or hangs) must not hold it.
	starts, stopStarts := context.WithCancel(ctx)
	defer stopStarts()
	for name, spec := range specs {
		// QueueSize is kept by room, which counts only tasks still waiting: a cancelled task's
		// number stays in the queue until a worker skips it, but takes no room. The queue's own
		// bound only caps the memory such numbers hold while every worker is busy.
		tasks, err := channels.New(handleBound(spec.QueueSize))
		if err != nil {
			stopStarts()
			ready.Wait()
			p.endStarted(ctx) // the groups made so far, and their workers
			return nil, err
		}
		g := &Group{p: p, name: name, spec: spec, tasks: tasks, workers: make([]*worker, spec.Workers),
			slots: make([]slotStats, spec.Workers)}
		g.meanBusy.Store(int64(tinyTask)) // not tiny until tasks show it (see crowded)
		if spec.QueueSize > 0 {
			g.room = make(chan struct{}, spec.QueueSize)
		}
		p.groups[name] = g
		for id := range spec.Workers {
			ready.Add(1)
			p.startSlot(starts, ctx, g, id, func(err error) {
				if err != nil {
					mu.Lock()
					where := fmt.Sprintf("worker %d", id)
					if name != "" {
						where += fmt.Sprintf(" of group %q", name)
					}
					firstErrs = append(firstErrs, fmt.Errorf("pool: starting %s: %w", where, err))
					mu.Unlock()
					stopStarts() // after the append: the first error is the cause, not its interrupts
				}
				ready.Done()
			})
		}
	}
	p.def = p.groups[""]
	ready.Wait()
	if len(firstErrs) > 0 {
		p.endStarted(ctx)
		return nil, firstErrs[0]
	}
	if opts.Name != "" {
		// Only now: Stats reads the groups New has been filling, and a pool that failed to start
		// must not take the variable from a live one.
		if err := p.publish(); err != nil {
			p.endStarted(ctx)
			return nil, err
		}
	}
	go func() {
		// cpython.Finalize waits for every interpreter to end, and the workers wait for work
		// until the pool closes: it closes then (running tasks finish, or Finalize's context
		// interrupts them; queued ones fail with ErrClosed).
		select {
		case <-cpython.Finalizing():
			p.Close()
		case <-p.closed:
		}
	}()
	return p, nil
}

// endStarted ends what a New that failed started: threads its workers' code left running get
// InterruptGrace to end (none once ctx has ended), then they are interrupted, as a worker's
// that failed to start are.
func (p *Pool) endStarted(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.InterruptGrace)
	defer cancel()
	_ = p.CloseContext(ctx) // New's own error is the one to report
}

// Group returns the named group (see Options.Groups); "" is the default group. Calls through it
// run only on its workers.
func (p *Pool) Group(name string) (*Group, error) {
	g, ok := p.groups[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoGroup, name)
	}
	return g, nil
}

// Call runs target ("pkg.module:func" or "path/to/file.py:func") with args on a worker of the
// default group and returns its result. A final cpython.Kwargs argument passes keyword
// arguments. Cancelling ctx removes the task if it is still queued, or interrupts it while it
// runs; the error then wraps ctx.Err(). Call returns as soon as ctx ends: an interrupted task
// stops on its worker a little later (about 6 ms for pure Python; see the package docs), and
// the worker takes no other task meanwhile. Python exceptions are *cpython.PythonError.
func (p *Pool) Call(ctx context.Context, target string, args ...any) (any, error) {
	return p.def.Call(ctx, target, args...)
}

// Check resolves target on a worker of the default group without calling it; see Group.Check.
func (p *Pool) Check(ctx context.Context, target string) error { return p.def.Check(ctx, target) }

// Submit queues a call on the default group and returns its Future at once (or waits while a
// bounded queue is full). ctx governs the task: cancelling it cancels the task.
func (p *Pool) Submit(ctx context.Context, target string, args ...any) (*Future, error) {
	return p.def.Submit(ctx, target, args...)
}

// Close refuses new work, lets running tasks finish, fails queued ones with ErrClosed, ends every
// interpreter and returns. A replacement worker still starting has its Preload or Setup
// interrupted: it would serve nothing. It is idempotent.
func (p *Pool) Close() error { return p.CloseContext(context.Background()) }

// CloseContext is Close that, once ctx ends, interrupts the tasks still running (they end with
// an error wrapping ErrClosed). It returns when everything has ended: nil if that came before
// ctx's end (as after an earlier Close that returned, whatever ctx), else an error wrapping
// ctx.Err(), whether or not a task was left to interrupt.
func (p *Pool) CloseContext(ctx context.Context) error {
	p.close.Do(func() {
		p.slotMu.Lock()
		p.closing.Store(true) // from here on no slot starts (startSlot), so slots.Wait below is final
		p.slotMu.Unlock()
		p.stopRestarts()
		for _, g := range p.groups {
			g.tasks.Close()
		}
		close(p.closed)
		go func() { p.slots.Wait(); close(p.ended) }()
	})
	// Queued tasks will not run: they end now, not when a worker is free to drop them (a
	// running task may never end).
	p.dropQueued()
	var err error
	select {
	case <-p.ended: // by an earlier Close: nil, whatever ctx says
	default:
		select {
		case <-p.ended:
		case <-ctx.Done():
			err = fmt.Errorf("pool: closed after its close's context ended (running tasks interrupted): %w", ctx.Err())
			p.abortNow()
			for _, g := range p.groups {
				g.interruptAll()
			}
			<-p.ended
		}
	}
	p.abortNow()
	p.dropQueued() // what came after the first drop (a Submit under way as Close began)
	return err
}

// dropQueued ends every task waiting in the pool's queues with ErrClosed.
func (p *Pool) dropQueued() {
	for _, g := range p.groups {
		for tk, ok := g.takeQueued(); ok; tk, ok = g.takeQueued() {
			if tk != nil {
				tk.drop(ErrClosed)
			}
		}
	}
}

// handleBound is the capacity of a group's task queue for a QueueSize: 0 (unbounded) for 0, else
// room for the waiting tasks and for many more cancelled ones that no worker has skipped yet.
func handleBound(queueSize int) int {
	if queueSize == 0 || queueSize > (math.MaxInt-1024)/4 {
		return 0 // unbounded, or so large that the bound could not be counted
	}
	return 4*queueSize + 1024
}

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Uptime time.Duration // since New
	Groups []GroupStats  // the default group ("") and the named ones, by name
}

// GroupStats counts one group's work. Every accepted task ends as exactly one of Done, Failed
// and Cancelled, so Submitted = Done + Failed + Cancelled + the tasks queued or running (a
// snapshot never shows more ended tasks than accepted ones). A batch (SubmitBatch) is one task;
// one that has to run again call by call (see SubmitBatch) ends as Failed, and each of its
// calls is then a task of its own.
type GroupStats struct {
	Name      string // "" for the default group
	Workers   int    // workers alive now
	Queued    int    // tasks waiting for a worker (not counting cancelled ones)
	Submitted uint64 // tasks accepted
	Done      uint64 // tasks that returned a result
	Failed    uint64 // tasks that ended with an error other than cancellation
	Cancelled uint64 // tasks whose context ended first (taken from the queue, or interrupted), or that Close ended
	Recycles  uint64 // workers ended to be replaced: task limit, SystemExit, MemoryError, lost to an interrupt or interrupted in an import, unable to wait for work (counted also when the pool closed before the replacement started)
	// Ending counts replaced workers' interpreters still ending: waiting for threads their code
	// started, or given up on while a task of theirs went on after its interrupt (see
	// Self-healing in the package doc). One that stays up holds a thread that an interrupt
	// does not stop (blocked in a C call that does not return, or Python code that swallows
	// every interrupt).
	Ending int
	// GivenUp counts those of Ending given up on while a task of theirs went on after its
	// interrupt (InterruptGrace): interrupted every 100 ms since, they are blocked where no
	// interrupt reaches, and may never end. Past the group's size, a slot whose worker is
	// given up stays empty until one of them ends (see InterruptGrace).
	GivenUp int
	// RestartFailures counts failed starts of replacement workers (Setup or Preload raised,
	// say, for a file gone since): the slot tries again, 50 ms later and up to 5 s apart, and
	// serves nothing meanwhile (Workers is lower). With none left, calls wait in the queue
	// while a slot has failed fewer than three starts in a row, and fail with ErrNoWorkers once
	// every slot has (see ErrNoWorkers). RestartError is the last one's error, "" once a worker
	// of the group has started since.
	RestartFailures uint64
	RestartError    string
	PerWorker       []WorkerStats
}

// WorkerStats counts one worker slot's work (across the interpreters that filled it).
type WorkerStats struct {
	ID    int           // the slot's number, pyworkers.worker_id() in its interpreters
	Tasks uint64        // tasks run (a batch, or a Check, is one)
	Busy  time.Duration // time spent running tasks
}

// Stats returns the pool's counters now.
func (p *Pool) Stats() Stats {
	s := Stats{Uptime: time.Since(p.started)}
	for _, g := range p.groups {
		// Ended counts first, then Submitted: a task is counted submitted before it can end.
		done, failed, cancelled := g.done.Load(), g.failed.Load(), g.cancelled.Load()
		gs := GroupStats{
			Name: g.name, Queued: int(g.queued.Load()), Workers: int(g.alive.Load()),
			Submitted: g.submitted.Load(), Done: done, Failed: failed,
			Cancelled: cancelled, Recycles: g.recycles.Load(), Ending: int(g.ending.Load()), GivenUp: int(g.givenUp.Load()),
			RestartFailures: g.restartFailures.Load(),
		}
		if e := g.restartErr.Load(); e != nil {
			gs.RestartError = *e
		}
		for id := range g.slots {
			st := &g.slots[id]
			gs.PerWorker = append(gs.PerWorker, WorkerStats{ID: id, Tasks: st.tasks.Load(), Busy: time.Duration(st.busy.Load())})
		}
		s.Groups = append(s.Groups, gs)
	}
	slices.SortFunc(s.Groups, func(a, b GroupStats) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// expvar variables cannot be removed, so each name is published once and shows the latest pool
// that started with it.
var (
	publishMu sync.Mutex
	published = map[string]*atomic.Pointer[Pool]{}
)

// checkName fails when the pool's expvar name belongs to something other than a pool.
func (p *Pool) checkName() error {
	publishMu.Lock()
	defer publishMu.Unlock()
	_, err := p.published()
	return err
}

// publish makes the pool's expvar variable show p.
func (p *Pool) publish() error {
	publishMu.Lock()
	defer publishMu.Unlock()
	cur, err := p.published()
	if err != nil {
		return err
	}
	if cur == nil {
		cur = new(atomic.Pointer[Pool])
		published[p.varName()] = cur
		expvar.Publish(p.varName(), expvar.Func(func() any {
			if p := cur.Load(); p != nil {
				return p.Stats()
			}
			return nil
		}))
	}
	cur.Store(p)
	return nil
}

func (p *Pool) varName() string { return "pyworkers.pool." + p.opts.Name }

// published is what the pool's expvar name shows (nil: nothing yet), or an error when the name
// belongs to something other than a pool. publishMu held.
func (p *Pool) published() (*atomic.Pointer[Pool], error) {
	if cur, ok := published[p.varName()]; ok {
		return cur, nil
	}
	if expvar.Get(p.varName()) != nil {
		return nil, fmt.Errorf("pool: an expvar variable %q exists already: give the pool another Name", p.varName())
	}
	return nil, nil
}
