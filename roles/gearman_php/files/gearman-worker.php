#!/usr/bin/env php
<?php
// The tutorial's worker: registers sendEmail and resizeImage and does the
// work (here: logs the job and sleeps a while). Logs go to standard output,
// which systemd sends to the journal.
//
//   gearman-worker.php [--servers FILE] [--work-ms N] [--id NAME]
// With GEARMAN_METRICS_FILE set, it keeps counts of jobs done and failed,
// and their durations, per function, and writes them there in Prometheus'
// text format (read by prometheus-node-exporter's textfile collector) once a
// second while they change, carrying on from that file after a restart.
// SIGTERM or SIGINT: the job in hand is finished, then the worker exits.
// A payload that is not JSON, or a job whose work throws, fails that job
// (sendFail, with the reason in the log); the worker goes on.
declare(strict_types=1);

const SERVERS_FILE = '/etc/gearman/servers';

$opts = getopt('', ['servers:', 'work-ms:', 'id:']);
// The option, else the environment, else 100 ms. Spelled out: "0" is a
// setting here, not an absence (a `?:` chain would turn it into 100).
$workSetting = $opts['work-ms'] ?? getenv('GEARMAN_WORK_MS');
$workMs = ($workSetting === false || $workSetting === '') ? 100 : max((int) $workSetting, 0);
$id = $opts['id'] ?? (getenv('GEARMAN_WORKER_ID') ?: 'php-' . getmypid());
$stop = false;

pcntl_async_signals(true);
foreach ([SIGTERM, SIGINT] as $signal) {
    pcntl_signal($signal, function () use (&$stop, $id) {
        $stop = true;
        echo "$id: stop asked, finishing the job in hand\n";
    });
}

function parse_server(string $server): array
{
    // host:port, or [IPv6 address]:port
    if (preg_match('/^\[([^\]]+)\](?::(\d+))?$/', $server, $m)) {
        return [$m[1], (int) ($m[2] ?? 4730)];
    }
    [$host, $port] = array_pad(explode(':', $server, 2), 2, '4730');
    return [$host, (int) $port];
}

function log_line(string $line): void
{
    echo $line, "\n";
}

// Jobs done and failed, and their durations, per function: Prometheus'
// text format in $metricsFile, replaced whole (write, then rename), so a
// reader never sees half a file. Same names and buckets as the Python worker.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
$metricsFile = getenv('GEARMAN_METRICS_FILE') ?: '';
$metrics = ['jobs' => [], 'buckets' => [], 'sum' => [], 'count' => []];
$metricsDirty = true;
$metricsWritten = 0;

// Carry on from the counts a previous run of this worker wrote, so that a
// restart (a deploy, a stop) does not reset them.
function resume_metrics(array $functions): void
{
    global $metrics, $metricsFile;
    $lines = $metricsFile === '' ? false : @file($metricsFile, FILE_IGNORE_NEW_LINES);
    $buckets = array_map(fn ($le) => rtrim(rtrim(sprintf('%.3f', $le), '0'), '.'), DURATION_BUCKETS);
    foreach ($lines ?: [] as $line) {
        if (!preg_match('/^(gearman_worker_[a-z_]+)\{(.*)\} (\S+)$/', $line, $m)) {
            continue;
        }
        preg_match_all('/(\w+)="((?:[^"\\\\]|\\\\.)*)"/', $m[2], $pairs, PREG_SET_ORDER);
        $labels = array_column($pairs, 2, 1);
        $f = $labels['function'] ?? '';
        if (!in_array($f, $functions, true)) {
            continue;
        }
        if ($m[1] === 'gearman_worker_jobs_total' && in_array($labels['outcome'] ?? '', ['done', 'failed'], true)) {
            $metrics['jobs'][$f][$labels['outcome']] = (int) $m[3];
        } elseif ($m[1] === 'gearman_worker_job_duration_seconds_bucket'
            && ($i = array_search($labels['le'] ?? '', $buckets, true)) !== false) {
            $metrics['buckets'][$f][$i] = (int) $m[3];
        } elseif ($m[1] === 'gearman_worker_job_duration_seconds_sum') {
            $metrics['sum'][$f] = (float) $m[3];
        } elseif ($m[1] === 'gearman_worker_job_duration_seconds_count') {
            $metrics['count'][$f] = (int) $m[3];
        }
    }
}

function observe(string $function, string $outcome, float $seconds): void
{
    global $metrics, $metricsDirty;
    $metrics['jobs'][$function][$outcome] = ($metrics['jobs'][$function][$outcome] ?? 0) + 1;
    foreach (DURATION_BUCKETS as $i => $le) {
        if ($seconds <= $le) {
            $metrics['buckets'][$function][$i] = ($metrics['buckets'][$function][$i] ?? 0) + 1;
        }
    }
    $metrics['sum'][$function] = ($metrics['sum'][$function] ?? 0.0) + $seconds;
    $metrics['count'][$function] = ($metrics['count'][$function] ?? 0) + 1;
    $metricsDirty = true;
}

function label(string $value): string
{
    return str_replace(["\\", "\n", '"'], ["\\\\", "\\n", '\\"'], $value);
}

function write_metrics(array $functions): void
{
    global $metrics, $metricsFile, $metricsDirty, $metricsWritten, $id;
    if ($metricsFile === '' || !$metricsDirty) {
        return;
    }
    $w = label($id);
    $out = "# HELP gearman_worker_jobs_total Jobs a sample worker finished, by function and outcome.\n"
        . "# TYPE gearman_worker_jobs_total counter\n";
    foreach ($functions as $f) {
        foreach (['done', 'failed'] as $outcome) {
            $out .= sprintf("gearman_worker_jobs_total{worker=\"%s\",function=\"%s\",outcome=\"%s\"} %d\n",
                $w, label($f), $outcome, $metrics['jobs'][$f][$outcome] ?? 0);
        }
    }
    $out .= "# HELP gearman_worker_job_duration_seconds Time a sample worker took per job, from taking it to answering.\n"
        . "# TYPE gearman_worker_job_duration_seconds histogram\n";
    foreach ($functions as $f) {
        $labels = sprintf('worker="%s",function="%s"', $w, label($f));
        foreach (DURATION_BUCKETS as $i => $le) {
            $out .= sprintf("gearman_worker_job_duration_seconds_bucket{%s,le=\"%s\"} %d\n",
                $labels, rtrim(rtrim(sprintf('%.3f', $le), '0'), '.'), $metrics['buckets'][$f][$i] ?? 0);
        }
        $count = $metrics['count'][$f] ?? 0;
        $out .= sprintf("gearman_worker_job_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", $labels, $count);
        $out .= sprintf("gearman_worker_job_duration_seconds_sum{%s} %.6f\n", $labels, $metrics['sum'][$f] ?? 0.0);
        $out .= sprintf("gearman_worker_job_duration_seconds_count{%s} %d\n", $labels, $count);
    }
    $tmp = $metricsFile . '.tmp';
    $metricsWritten = microtime(true);
    if (@file_put_contents($tmp, $out) === false || !@rename($tmp, $metricsFile)) {
        log_line("$id: could not write $metricsFile");
        return;  // still dirty: tried again a second later
    }
    $metricsDirty = false;
}

// Returns whether the job was done (false: it failed).
function handle(GearmanJob $job, string $what): bool
{
    global $workMs, $id;
    $payload = json_decode($job->workload(), true);
    if (!is_array($payload)) {
        log_line(sprintf('%s: FAILED %s %s: payload is not JSON: %s', $id, $job->functionName(), $job->handle(), substr($job->workload(), 0, 200)));
        $job->sendFail();
        return false;
    }
    // A payload may ask for slower work ("work_ms") or for the work to throw
    // ("fail", the message), to try out faults.
    if (isset($payload['fail'])) {
        throw new RuntimeException((string) $payload['fail']);
    }
    $ms = isset($payload['work_ms']) ? min(max((int) $payload['work_ms'], 0), 600000) : $workMs;
    // A signal (the stop request) cuts usleep() short: sleep on until the
    // job's time is up, so that the job in hand is really finished.
    $until = hrtime(true) + $ms * 1000000;
    while (($left = $until - hrtime(true)) > 0) {
        usleep(intdiv($left, 1000));
    }
    log_line(sprintf('%s: done %s %s %s', $id, $job->functionName(), $job->handle(), json_encode($payload, JSON_UNESCAPED_SLASHES)));
    $job->sendComplete("$what done by $id");
    return true;
}

$worker = new GearmanWorker();
$lines = @file($opts['servers'] ?? SERVERS_FILE, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [];
$servers = array_values(array_filter(array_map('trim', $lines), fn ($l) => $l !== '' && $l[0] !== '#'));
foreach ($servers as $server) {
    [$host, $port] = parse_server($server);
    // addServer() connects to set an option and throws when the server does
    // not answer yet (gearmand still starting at boot, or a job server host
    // down); the server stays listed, and work() connects once it answers.
    try {
        $worker->addServer($host, $port);
    } catch (GearmanException $e) {
        log_line("$id: job server $server does not answer yet (" . $e->getMessage() . '); waiting for it');
    }
}
if (!$servers) {
    fwrite(STDERR, "$id: no job server listed\n");
    exit(1);
}
// Work that throws fails its job: the job server is told (and drops a
// background job), instead of the exception ending the worker.
function handle_or_fail(GearmanJob $job, string $what): void
{
    global $id;
    $started = hrtime(true);
    try {
        $outcome = handle($job, $what) ? 'done' : 'failed';
    } catch (Throwable $e) {
        log_line(sprintf('%s: FAILED %s %s: %s: %s', $id, $job->functionName(), $job->handle(), get_class($e), $e->getMessage()));
        $job->sendFail();
        $outcome = 'failed';
    }
    observe($job->functionName(), $outcome, (hrtime(true) - $started) / 1e9);
}
$worker->addFunction('sendEmail', fn (GearmanJob $job) => handle_or_fail($job, 'email'));
$worker->addFunction('resizeImage', fn (GearmanJob $job) => handle_or_fail($job, 'resize'));
// Wake up every second to notice a stop request between jobs.
$worker->setTimeout(1000);
log_line("$id: ready for sendEmail, resizeImage ($workMs ms of work a job)");

$functions = ['sendEmail', 'resizeImage'];
resume_metrics($functions);
write_metrics($functions);
while (!$stop) {
    if (microtime(true) - $metricsWritten >= 1) {
        write_metrics($functions);
    }
    $worker->work();
    $rc = $worker->returnCode();
    if ($rc === GEARMAN_SUCCESS || $rc === GEARMAN_TIMEOUT || $rc === GEARMAN_IO_WAIT || $rc === GEARMAN_NO_JOBS) {
        continue;
    }
    if ($rc === GEARMAN_NO_ACTIVE_FDS || $rc === GEARMAN_COULD_NOT_CONNECT || $rc === GEARMAN_LOST_CONNECTION) {
        // No job server right now: wait and try again rather than exit.
        sleep(1);
        continue;
    }
    log_line("$id: worker error " . $worker->error() . ", going on");
    sleep(1);
}
write_metrics($functions);
log_line("$id: stopped");
