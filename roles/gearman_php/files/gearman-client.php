#!/usr/bin/env php
<?php
// Submits the tutorial's two background jobs, sendEmail and resizeImage, and
// returns at once: the job server keeps them (in MySQL) until a worker is free.
//
//   gearman-client.php [--count N] [--function sendEmail|resizeImage|both]
//                      [--email ADDRESS] [--name NAME] [--image PATH]
//                      [--servers FILE]
// Prints one job handle a line; exits 1 with a message when no job server
// takes a job.
declare(strict_types=1);

const SERVERS_FILE = '/etc/gearman/servers';

function fail(string $message): never
{
    fwrite(STDERR, "gearman-client: $message\n");
    exit(1);
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

function read_servers(string $file): array
{
    $lines = @file($file, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES);
    if ($lines === false) {
        fail("cannot read the job server list $file");
    }
    $servers = array_values(array_filter(array_map('trim', $lines), fn ($l) => $l !== '' && $l[0] !== '#'));
    if (!$servers) {
        fail("no job server in $file");
    }
    return $servers;
}

$opts = getopt('', ['count:', 'function:', 'email:', 'name:', 'image:', 'servers:', 'help']);
if (isset($opts['help'])) {
    fwrite(STDOUT, "usage: gearman-client.php [--count N] [--function sendEmail|resizeImage|both] "
        . "[--email ADDRESS] [--name NAME] [--image PATH] [--servers FILE]\n");
    exit(0);
}
$count = (int) ($opts['count'] ?? 1);
$which = $opts['function'] ?? 'both';
if ($count < 1 || !in_array($which, ['sendEmail', 'resizeImage', 'both'], true)) {
    fail('--count takes a whole number from 1, --function sendEmail, resizeImage or both');
}

$servers = read_servers($opts['servers'] ?? SERVERS_FILE);
// One connection per job server. libgearman alone sends a job to one server
// and waits for it; a server that is stopping, or still replaying its queue
// after a start, accepts the connection and then does not answer. So each job
// is offered to the servers in turn, and a server that failed goes to the
// back of the line for the jobs after it.
$clients = [];
foreach ($servers as $server) {
    [$host, $port] = parse_server($server);
    $client = new GearmanClient();
    // Fail fast to the next server rather than wait for ever: 5 s for each
    // answer, the option exchange of addServer() included (a stuck server,
    // or one replaying its queue, accepts the connection and says nothing).
    $client->setTimeout(5000);
    // addServer() connects to set an option and throws when the server does
    // not answer; the server stays listed, and is tried like the others.
    try {
        $client->addServer($host, $port);
    } catch (GearmanException $e) {
    }
    $clients[$server] = $client;
}

/** Queue one background job; returns its handle, or fails with the reason. */
function submit_background(array &$clients, string $function, string $workload): string
{
    $unreachable = [GEARMAN_COULD_NOT_CONNECT, GEARMAN_LOST_CONNECTION, GEARMAN_NO_ACTIVE_FDS, GEARMAN_TIMEOUT, GEARMAN_ERRNO];
    $errors = [];
    foreach ($clients as $server => $client) {
        try {
            // Its warning would repeat the error reported below.
            $handle = @$client->doBackground($function, $workload);
        } catch (GearmanException $e) {
            $handle = '';
        }
        $rc = $client->returnCode();
        if ($rc === GEARMAN_SUCCESS && $handle) {
            return $handle;
        }
        if (!in_array($rc, $unreachable, true)) {
            fail("$function was not queued: the job server $server refused it, see its log (" . $client->error() . ')');
        }
        $errors[] = "$server: " . $client->error();
        // Try this one last from now on.
        unset($clients[$server]);
        $clients[$server] = $client;
    }
    fail("$function was not queued: no job server answers (" . implode('; ', $errors) . ')');
}

for ($i = 1; $i <= $count; $i++) {
    $jobs = [];
    if ($which !== 'resizeImage') {
        $jobs['sendEmail'] = [
            'name' => $opts['name'] ?? 'web',
            'email' => $opts['email'] ?? 'member@example.com',
            'seq' => $i,
            'lang' => 'php',
        ];
    }
    if ($which !== 'sendEmail') {
        $jobs['resizeImage'] = [
            'image' => $opts['image'] ?? '/var/www/pub/image/test.png',
            'seq' => $i,
            'lang' => 'php',
        ];
    }
    foreach ($jobs as $function => $payload) {
        $handle = submit_background($clients, $function, json_encode($payload, JSON_THROW_ON_ERROR));
        echo "$function queued: $handle\n";
    }
}
