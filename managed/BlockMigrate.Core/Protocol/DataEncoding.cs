namespace BlockMigrate.Protocol;

/// <summary>How a data frame's bytes are carried: the wire id. Compressed encodings have a row in <see cref="BlockCodec.All"/>.</summary>
public enum DataEncoding : byte
{
    Raw = 0,
    Lz4 = 1,
    /// <summary>The range reads as zeros; no bytes follow.</summary>
    Zero = 2,
    /// <summary>zstd; only sent to a receiver whose Welcome lists "zstd".</summary>
    Zstd = 3,
}
