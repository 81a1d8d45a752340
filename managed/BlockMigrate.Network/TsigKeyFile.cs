namespace BlockMigrate.Network;

/// <summary>Checks a TSIG key file before it is handed to nsupdate: it must exist, be a regular file and
/// give no access to group or others (a readable secret lets anyone repoint the VM's name).</summary>
public static class TsigKeyFile
{
    const UnixFileMode GroupOrOthers =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>Null when the file is fine, else one line saying what is wrong and how to fix it.</summary>
    public static string? Problem(string path)
    {
        FileInfo f;
        try { f = new FileInfo(path); }
        catch (Exception ex) when (ex is ArgumentException or PathTooLongException or NotSupportedException)
        { return $"TSIG key file '{path}' is not a valid path"; }
        if (!f.Exists)
            return $"TSIG key file {path} does not exist (make one with: tsig-keygen -a hmac-sha256 NAME > {path}; chmod 600 {path})";
        if (OperatingSystem.IsWindows())
            return null;
        var mode = f.UnixFileMode;
        if ((mode & GroupOrOthers) != 0)
            return $"TSIG key file {path} is accessible by group or others (mode {Octal(mode)}); refusing to use it: chmod 600 {path}";
        return null;
    }

    static string Octal(UnixFileMode m) => Convert.ToString((int)m & 0xfff, 8).PadLeft(4, '0');
}
