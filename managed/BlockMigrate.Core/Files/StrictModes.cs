using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace BlockMigrate.Files;

/// <summary>
/// ssh's StrictModes for BlockMigrate's own secrets and trust anchors: a private key nobody but its owner
/// can read, and trusted / known-hosts files (and their directory) nobody but their owner can change.
/// Both must be owned by this process's user or root. Each refusal is one line naming the file and the fix.
/// </summary>
public static unsafe class StrictModes
{
    /// <summary>
    /// A private key: a regular file owned by this user or root, with no group or other permission bits.
    /// Files in systemd's <c>$CREDENTIALS_DIRECTORY</c> are exempt from the mode check (systemd makes them
    /// readable to the service's user alone, possibly through an ACL that shows as group bits).
    /// </summary>
    public static string? KeyProblem(string path)
    {
        if (Stat(path, out var st) is { } missing) return missing;
        if (!S_ISREG(st.st_mode)) return $"key file {path} is not a regular file";
        if (!FileTrust.IsTrustedOwner(st.st_uid, serviceUser: false))
            return $"key file {path} is owned by uid {(uint)st.st_uid}, not by {FileTrust.Owners(false)}; refusing it (chown {FileTrust.EffectiveUid} {path})";
        if ((st.st_mode & 0x3f) != 0 && !InCredentialsDirectory(path))
            return $"key file {path} is accessible by group or others (mode {FileTrust.Octal(st.st_mode)}); refusing it: chmod 600 {path}";
        return null;
    }

    /// <summary>
    /// A trusted or known-hosts file: a regular file owned by this user or root and not writable by group or
    /// others, in a directory owned by this user or root and not writable by group or others.
    /// </summary>
    public static string? TrustFileProblem(string path, string what)
    {
        if (Stat(path, out var st) is { } missing) return missing;
        if (!S_ISREG(st.st_mode)) return $"{what} {path} is not a regular file";
        if (!FileTrust.IsTrustedOwner(st.st_uid, serviceUser: false))
            return $"{what} {path} is owned by uid {(uint)st.st_uid}, not by {FileTrust.Owners(false)}; refusing it (chown {FileTrust.EffectiveUid} {path})";
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
            return $"{what} {path} is writable by group or others (mode {FileTrust.Octal(st.st_mode)}); refusing it: chmod go-w {path}";
        // the directory that holds the file itself (a symlink's target)
        var real = File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(real) ?? "/";
        if (Stat(dir, out var ds) is { } dirMissing) return dirMissing;
        if (!FileTrust.IsTrustedOwner(ds.st_uid, serviceUser: false))
            return $"the directory {dir} of {what} {path} is owned by uid {(uint)ds.st_uid}, not by {FileTrust.Owners(false)}; refusing it (chown {FileTrust.EffectiveUid} {dir})";
        if ((ds.st_mode & (S_IWGRP | S_IWOTH)) != 0)
            return $"the directory {dir} of {what} {path} is writable by group or others (mode {FileTrust.Octal(ds.st_mode)}); refusing it: chmod go-w {dir}";
        return null;
    }

    private static bool InCredentialsDirectory(string path) =>
        Environment.GetEnvironmentVariable("CREDENTIALS_DIRECTORY") is { Length: > 0 } creds &&
        Path.GetDirectoryName(Path.GetFullPath(path)) == Path.GetFullPath(creds).TrimEnd('/');

    private static string? Stat(string path, out Tmds.Linux.stat st)
    {
        int rc;
        fixed (Tmds.Linux.stat* p = &st)
        fixed (byte* z = Interop.NativeMethods.Utf8z(path))
            rc = stat(z, p);
        return rc == 0 ? null : $"cannot read {path}: {Interop.NativeMethods.ErrnoText(errno)}";
    }
}
