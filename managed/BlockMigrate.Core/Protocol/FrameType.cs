namespace BlockMigrate.Protocol;

/// <summary>The kind of a frame. Control frames carry JSON; the rest have binary layouts (see each type).</summary>
public enum FrameType : byte
{
    /// <summary>source → receiver, JSON <see cref="HelloMessage"/>: the disks and what the source knows of them.</summary>
    Hello = 1,
    /// <summary>receiver → source, JSON <see cref="WelcomeMessage"/>: per disk, resume or fresh.</summary>
    Welcome = 2,
    /// <summary>source → receiver, <see cref="DataHeader"/> then the bytes (raw, LZ4 or zstd: <see cref="DataEncoding"/>), or nothing for zeros.</summary>
    Data = 3,
    /// <summary>source → receiver, <see cref="FinalSet"/>: the blocks still stale at the freeze, before their data.</summary>
    FinalSet = 4,
    /// <summary>source → receiver, empty: flush everything and make it durable (the commit; in commit mode also the hand-over).</summary>
    Commit = 5,
    /// <summary>receiver → source, empty: everything is written and fsynced.</summary>
    Committed = 6,
    /// <summary>receiver → source, 8 bytes: the highest sequence number written (cumulative).</summary>
    Ack = 7,
    /// <summary>either way, UTF-8: one line saying what failed; the connection is closed after it.</summary>
    Error = 8,
    /// <summary>source → receiver, empty: hash every disk now (after the commit, while the source is frozen).</summary>
    Verify = 9,
    /// <summary>receiver → source, JSON <see cref="VerifyResultMessage"/>.</summary>
    VerifyResult = 10,
    /// <summary>source → receiver, <see cref="SeedHashes"/>: keyed hashes of blocks of the first round, asking the receiver to supply them from its seeds (only to a receiver whose Welcome has a seed key).</summary>
    SeedHashes = 16,
    /// <summary>receiver → source, <see cref="SeedAnswer"/>: which blocks of one SeedHashes frame it wrote from its seeds (before that frame's ack).</summary>
    SeedAnswer = 17,
}
