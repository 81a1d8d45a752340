using BlockMigrate.Hypervisors.Xen;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Stands in for a Xen toolstack, which cannot run here: an <c>xl</c> script that logs its exact argv
/// and plays domain states kept as files (state/src/NAME, state/dst/NAME holding xl's six state flags),
/// and an <c>ssh</c> script that logs its argv and runs that xl as the destination's. How
/// <c>xl migrate</c> ends is chosen by <see cref="MigrateOutcome"/>, mirroring xl_migrate.c's outcomes.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
internal sealed class FakeXl : IDisposable
{
    public const string Host = "dsthost";
    public const string Running = "-b----";
    public const string Paused = "--p---";
    public const string Suspended = "---s--";

    private readonly TempDir _dir = new("xl");

    public FakeXl()
    {
        Directory.CreateDirectory(_dir["state/src"]);
        Directory.CreateDirectory(_dir["state/dst"]);
        File.WriteAllText(_dir["xl"], XlScript);
        File.WriteAllText(_dir["ssh"], SshScript);
        File.SetUnixFileMode(_dir["xl"], (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(_dir["ssh"], (UnixFileMode)0b111_101_101);
        MigrateOutcome = "ok";
    }

    /// <summary>
    /// ok: handed over, paused at the destination, gone here. fail: xl resumed it here. fail-leftover:
    /// as fail, with a half-built NAME--incoming left at the destination. fail-paused / fail-suspended:
    /// interrupted, leaving the source domain paused / suspended. hang: never ends (until a signal).
    /// </summary>
    public string MigrateOutcome { set => File.WriteAllText(_dir["migrate-mode"], value); }

    public XenOptions Options(string domain, string? sshCommand = null) => new()
    {
        Domain = domain,
        DestinationHost = Host,
        XlPath = _dir["xl"],
        RemoteCommand = [_dir["ssh"], Host],
        SshCommand = sshCommand,
    };

    public void SetDomain(string side, string name, string? flags)
    {
        var f = _dir[$"state/{side}/{name}"];
        if (flags == null)
            File.Delete(f);
        else
            File.WriteAllText(f, flags);
    }

    public string? Domain(string side, string name)
    {
        var f = _dir[$"state/{side}/{name}"];
        return File.Exists(f) ? File.ReadAllText(f).Trim() : null;
    }

    public void Mark(string text) => File.AppendAllText(_dir["calls.log"], text + "\n");

    public string[] Calls() => File.Exists(_dir["calls.log"]) ? File.ReadAllLines(_dir["calls.log"]) : [];

    public void Dispose() => _dir.Dispose();

    private const string XlScript = """
        #!/bin/bash
        # fake xl: logs its argv (arguments with spaces in single quotes), plays domain states
        d=$(dirname "$0"); side=${FAKE_XL_SIDE:-src}; st=$d/state/$side
        { printf 'xl@%s' "$side"; for a in "$@"; do case $a in *' '*) printf " '%s'" "$a";; *) printf ' %s' "$a";; esac; done; echo; } >> "$d/calls.log"
        case $1 in
          list)
            [ -f "$st/$2" ] || { echo "$2 is an invalid domain identifier (rc=-6)" >&2; exit 1; }
            echo "Name                                        ID   Mem VCPUs      State   Time(s)"
            printf '%-40s %5d %5d %5d     %s %8.1f\n' "$2" 7 128 1 "$(cat "$st/$2")" 12.5 ;;
          unpause)
            [ -f "$st/$2" ] || { echo "$2 is an invalid domain identifier" >&2; exit 1; }
            echo "-b----" > "$st/$2" ;;
          destroy)
            [ -f "$st/$2" ] || { echo "$2 is an invalid domain identifier" >&2; exit 1; }
            rm -f "$st/$2" ;;
          migrate)
            shift; OPTIND=1; while getopts "ps:C:eD" o; do :; done; shift $((OPTIND-1)); dom=$1
            [ -f "$d/state/src/$dom" ] || { echo "$dom is an invalid domain identifier" >&2; exit 1; }
            case $(cat "$d/migrate-mode") in
              ok) rm "$d/state/src/$dom"; echo "--p---" > "$d/state/dst/$dom"
                  echo "migration sender: Target reports successful startup." >&2; echo "Migration successful." >&2 ;;
              fail) echo "Migration failed, resuming at sender." >&2; exit 1 ;;
              fail-leftover) echo "--p---" > "$d/state/dst/$dom--incoming"
                  echo "Migration failed, resuming at sender." >&2; exit 1 ;;
              fail-paused) echo "--p---" > "$d/state/src/$dom"; exit 1 ;;
              fail-suspended) echo "---s--" > "$d/state/src/$dom"; exit 1 ;;
              hang) exec sleep 60 ;;
            esac ;;
          *) echo "fake xl: unexpected command $1" >&2; exit 2 ;;
        esac
        """;

    private const string SshScript = """
        #!/bin/bash
        # fake ssh HOST xl ARGS...: logs its argv, runs the fake xl as the destination's
        d=$(dirname "$0")
        echo "ssh $*" >> "$d/calls.log"
        shift
        [ "$1" = xl ] || { echo "fake ssh: expected xl, got $1" >&2; exit 2; }
        shift
        FAKE_XL_SIDE=dst exec "$d/xl" "$@"
        """;
}
