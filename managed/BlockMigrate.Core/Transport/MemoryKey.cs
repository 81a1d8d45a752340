using System.Security.Cryptography;

namespace BlockMigrate.Transport;

/// <summary>
/// The pre-shared key of one migration's memory stream: QEMU encrypts and authenticates its migration
/// with TLS (PSK) under it (QEMU object <c>tls-creds-psk</c>). The source makes it, keeps it for its own
/// QEMU and delivers it to the receiver inside the pinned TLS channel; each side writes it as QEMU's
/// <c>keys.psk</c> (<c>USERNAME:HEXKEY</c>) into a fresh directory only its owner (root) can enter, on
/// tmpfs (<c>/dev/shm</c>) where there is one, and removes it when the migration ends.
/// </summary>
public static class MemoryKey
{
    /// <summary>The PSK identity QEMU's client presents (<c>username</c> of the client's tls-creds-psk).</summary>
    public const string Username = "blockmigrate";

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
            using var f = new StreamWriter(new FileStream(Path.Combine(dir, "keys.psk"), options));
            f.Write($"{Username}:{key}\n");
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
