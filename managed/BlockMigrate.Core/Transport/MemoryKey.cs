using System.Security.Cryptography;

namespace BlockMigrate.Transport;

/// <summary>
/// The pre-shared key of one migration's memory stream: QEMU encrypts and authenticates its migration
/// with TLS (PSK) under it (QEMU object <c>tls-creds-psk</c>). The source makes it, keeps it for its own
/// QEMU and delivers it to the receiver inside the pinned TLS channel; each side writes it as QEMU's
/// <c>keys.psk</c> (<c>USERNAME:HEXKEY</c>, with a fixed <c>dh-params.pem</c>) into a fresh directory only its owner (root) can enter, on
/// tmpfs (<c>/dev/shm</c>) where there is one, and removes it when the migration ends.
/// </summary>
public static class MemoryKey
{
    /// <summary>The PSK identity QEMU's client presents (<c>username</c> of the client's tls-creds-psk).</summary>
    public const string Username = "blockmigrate";

    /// <summary>
    /// The RFC 7919 ffdhe2048 group (public constants), as QEMU's <c>dh-params.pem</c>. Without the file a
    /// server-side <c>tls-creds-psk</c> makes GnuTLS generate 2048-bit DH parameters at <c>object-add</c>, in
    /// the destination QEMU's main loop: 0.3–3 s of CPU measured here, up to 9 s on the loaded benchmark
    /// host (docs/BENCHMARKS.md); with it, object-add takes milliseconds.
    /// </summary>
    public const string DhParamsPem = """
        -----BEGIN DH PARAMETERS-----
        MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
        +8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
        87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
        YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
        7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
        ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
        -----END DH PARAMETERS-----

        """;

    /// <summary>A new key: 32 random bytes, as 64 lower-case hex digits.</summary>
    public static string New() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

    /// <summary>Exactly 64 hex digits (what a peer sends is checked before it reaches a file).</summary>
    public static bool IsValid(string? key) => key is { Length: 64 } && key.All(char.IsAsciiHexDigit);

    /// <summary>Writes <c>keys.psk</c> into a new mode-0700 directory and returns the directory.</summary>
    public static string WriteDirectory(string key)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException();
        if (!IsValid(key)) throw new TransportException("a memory key must be 64 hex digits");
        var parent = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        // 128 random bits in the name: nobody can create it before us, so it is ours and 0700
        var dir = Path.Combine(parent, "blockmigrate-memkey-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)));
        if (Path.Exists(dir)) throw new TransportException($"{dir} exists already");
        try
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TransportException($"cannot make a directory for the memory stream's key in {parent}: {e.Message}");
        }
        try
        {
            if (new DirectoryInfo(dir).LinkTarget != null
                || File.GetUnixFileMode(dir) != (UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute))
                throw new TransportException($"{dir} is not a private directory");
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew, Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            };
            using (var f = new StreamWriter(new FileStream(Path.Combine(dir, "keys.psk"), options)))
                f.Write($"{Username}:{key}\n");
            using (var f = new StreamWriter(new FileStream(Path.Combine(dir, "dh-params.pem"), options)))
                f.Write(DhParamsPem);
            return dir;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Remove(dir);
            throw new TransportException($"cannot write the memory stream's key in {dir}: {e.Message}");
        }
        catch
        {
            Remove(dir);
            throw;
        }
    }

    /// <summary>Removes a directory made by <see cref="WriteDirectory"/>; never throws.</summary>
    public static void Remove(string? dir)
    {
        if (dir == null) return;
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
