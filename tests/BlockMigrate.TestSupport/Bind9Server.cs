using System.Diagnostics;

namespace BlockMigrate.TestSupport;

/// <summary>
/// A real BIND 9 (`named -g`) inside a test network namespace, on 127.0.0.1:<see cref="Port"/>, primary
/// for one zone that key "ddns-key" (hmac-sha256, from tsig-keygen) may update (A, AAAA, TXT).
/// Stopped by PID.
/// </summary>
public sealed class Bind9Server : IAsyncDisposable
{
    public const int Port = 5353;
    public const string KeyName = "ddns-key";
    Process? _named;

    public required string Namespace { get; init; }
    public required string Directory { get; init; }
    public string KeyFile => Path.Combine(Directory, "ddns.key");

    public static async Task<Bind9Server> StartAsync(string ns, string zone, string records, CancellationToken ct)
    {
        var dir = System.IO.Directory.CreateTempSubdirectory($"{ns}-bind-").FullName;
        var s = new Bind9Server { Namespace = ns, Directory = dir };
        await s.NewKeyAsync(s.KeyFile, ct);
        await File.WriteAllTextAsync(Path.Combine(dir, "named.conf"), $$"""
            include "{{s.KeyFile}}";
            options {
              directory "{{dir}}";
              listen-on port {{Port}} { 127.0.0.1; };
              listen-on-v6 { none; };
              pid-file "{{dir}}/named.pid";
              session-keyfile "{{dir}}/session.key";
              recursion no;
              dnssec-validation no;
              notify no;
            };
            controls { };
            zone "{{zone}}" {
              type primary;
              file "{{dir}}/zone.db";
              update-policy { grant {{KeyName}} zonesub A; grant {{KeyName}} zonesub AAAA; grant {{KeyName}} zonesub TXT; };
            };
            """, ct);
        await File.WriteAllTextAsync(Path.Combine(dir, "zone.db"), $"""
            $TTL 5
            @   IN SOA ns.{zone}. admin.{zone}. ( 1 60 60 600 5 )
            @   IN NS  ns.{zone}.
            ns  IN A   127.0.0.1
            {records}
            """, ct);
        await Shell.RunAsync($"named-checkconf {dir}/named.conf && named-checkzone -q {zone} {dir}/zone.db", ct: ct);
        s._named = Process.Start(new ProcessStartInfo("sh",
            ["-c", $"exec ip netns exec {ns} named -g -c {dir}/named.conf >{dir}/named.log 2>&1"]))!;
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var r = await Shell.TryAsync($"dig +short +time=1 +tries=1 -p {Port} @127.0.0.1 {zone} SOA", ns, ct);
            if (r.ExitCode == 0 && r.StandardOutput.Contains("ns.", StringComparison.Ordinal)) break;
            if (s._named.HasExited || deadline.Elapsed > TimeSpan.FromSeconds(15))
                throw new InvalidOperationException("named did not start: " + File.ReadAllText(Path.Combine(dir, "named.log")));
            await Task.Delay(100, ct);
        }
        return s;
    }

    /// <summary>A new hmac-sha256 key named ddns-key (a different secret each call), mode 0600.</summary>
    public async Task NewKeyAsync(string path, CancellationToken ct)
    {
        await Shell.RunAsync($"tsig-keygen -a hmac-sha256 {KeyName} > {path}; chmod 600 {path}", ct: ct);
    }

    public async Task<string> DigAsync(string name, string type, CancellationToken ct)
    {
        var r = await Shell.RunAsync($"dig +noall +answer +norecurse -p {Port} @127.0.0.1 {name} {type}", Namespace, ct);
        return r.Trim();
    }

    public async Task<string[]> DigShortAsync(string name, string type, CancellationToken ct)
    {
        var r = await Shell.RunAsync($"dig +short +norecurse -p {Port} @127.0.0.1 {name} {type}", Namespace, ct);
        return r.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order().ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        if (_named is { HasExited: false })
        {
            _named.Kill();
            await _named.WaitForExitAsync();
        }
        _named?.Dispose();
        try { System.IO.Directory.Delete(Directory, true); } catch (IOException) { }
    }
}
