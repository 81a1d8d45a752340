using System.Diagnostics;

namespace BlockMigrate.TestSupport;

/// <summary>How every test stops what it started: by its PID, SIGKILL, then wait for it to be reaped.</summary>
public static class ProcessStop
{
    public static void KillAndWait(this Process process, bool entireTree = false)
    {
        try
        {
            if (!process.HasExited) process.Kill(entireTree);
            process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { } // never started, or already disposed of
    }
}
