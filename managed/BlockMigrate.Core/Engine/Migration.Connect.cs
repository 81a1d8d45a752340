using BlockMigrate.Protocol;
using BlockMigrate.Transport;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    /// <summary>
    /// Connects and authenticates, then the handshake: Hello lists each disk with the lineage its map's
    /// cookie names and whether the map's bits are resumable against this receiver; Welcome says per
    /// disk whether the receiver holds that lineage's consistent base. Where both agree the map's bits
    /// are kept (resume); otherwise every block is marked dirty (a fresh copy). Only then is the cookie
    /// set to "running", so a run that dies without giving bits back is never resumed from.
    /// From the TCP connect to the Welcome, <see cref="MigrationOptions.ConnectTimeout"/> at most: a
    /// receiver that accepts the connection and then stays silent is given up on with one clear line.
    /// </summary>
    private async Task ConnectAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Connecting);
        using var opening = CancellationTokenSource.CreateLinkedTokenSource(ct);
        opening.CancelAfter(_options.ConnectTimeout);
        _openingStage = "no answer to the connection and authentication";
        try
        {
            await OpenAndGreetAsync(opening.Token);
        }
        catch (Exception e) when (opening.IsCancellationRequested && !ct.IsCancellationRequested && e is not MigrationException)
        {
            throw new TransportException($"receiver {_options.Host}:{_options.Port} did not answer within {_options.ConnectTimeout.TotalSeconds:0.#} s " +
                                         $"({_openingStage}): is a BlockMigrate receiver listening there, and not overloaded? (--connect-timeout)");
        }
        _sender = new BlockSender(_session!, _options);
        _sender.Start();
        _producer = new FrameProducer(InitialCodec());
        _codecCheckedAt = System.Diagnostics.Stopwatch.GetTimestamp(); // the first codec check looks at the copy only, not the handshake
        if (_producer.Codec != DataEncoding.Raw) Say($"codec: {_producer.Codec.ToString().ToLowerInvariant()}");
        await MeasureRoundTripAsync(ct);
    }

    private string _openingStage = "";
    private SourceSession? _session; // the protocol side of the connection (Protocol/SourceSession.cs); BlockSender stops it

    /// <summary>Connects, authenticates, sends Hello and reads the Welcome; <paramref name="ct"/> carries the opening's deadline.</summary>
    private async Task OpenAndGreetAsync(CancellationToken ct)
    {
        NodeKey? key = null;
        try
        {
            if (!_options.Plaintext)
            {
                if (_options.KeyPath == null) throw new TransportException("no key given (--key FILE); make one with 'blockmigrate keygen', or use --plaintext on both sides");
                key = NodeKey.Load(_options.KeyPath);
            }
            _channel = await SecureChannel.ConnectAsync(_options.Host, _options.Port, key, _options.PeerFingerprint, _options.Plaintext, ct);
        }
        finally
        {
            key?.Dispose();
        }
        Say($"connected to {_options.Host}:{_options.Port} ({(_options.Plaintext ? "plaintext" : "TLS 1.3, receiver key " + _channel.Peer)})");

        var session = _session = new SourceSession(_channel.Stream);
        var offers = new List<DiskOffer>();
        foreach (var d in _disks)
        {
            var identity = ResumeCookie.IdentityOf(_channel.Peer, d.Name, d.Size, d.BlockSize);
            var old = ResumeCookie.Decode(d.Map.GetCookie());
            if (old.State == CookieState.HandedOver)
            {
                // an earlier run handed the VM over and its last blocks did not all land: finish that.
                // Past the point of no return already: no failure from here gives anything back or thaws.
                if (!_state.IsHandedOver) _state.HandOver();
                if (!old.Identity.AsSpan().SequenceEqual(identity))
                    throw new MigrationException($"disk {d.Name} was handed over to another receiver, whose gate holds its last blocks: finish it there");
                var recovered = d.RecoverOutstanding(old.Lineage);
                if (!recovered) d.Map.MarkBlocks(0, d.Map.Blocks);
                d.Finishing = true;
                d.Frozen = true;
                Say($"disk {d.Name}: finishing the hand-over of lineage {old.LineageHex}: " +
                    (recovered ? $"{d.Map.DirtyCount()} blocks were out" : "no record of the blocks that were out: sending every block") +
                    "; the receiver writes only those its gate still holds");
            }
            else if (old.State == CookieState.Running)
            {
                // the previous run died without giving its bits back (SIGKILL, power to the process)
                var recovered = d.RecoverOutstanding(old.Lineage);
                if (recovered) old = old with { State = CookieState.Resumable };
                if ((d.Map.Counters().State & Maps.MapState.Frozen) != 0) TryRun($"disk {d.Name}: thawing the map the dead run left frozen", d.Map.Thaw);
                Say($"disk {d.Name}: the previous run of lineage {old.LineageHex} died; {(recovered ? "its outstanding blocks are dirty again: resuming" : "no record of its outstanding blocks: copying afresh")}");
            }
            var resume = old.AllowsResume(identity);
            d.Cookie = resume ? old : new ResumeCookie(ResumeCookie.NewLineage(), identity, CookieState.None);
            // the return trip: a destination's map since its commit holds exactly the blocks written since that generation
            ulong? returnBase = null;
            if (old.State == CookieState.Returnable && !resume && !d.Finishing)
            {
                d.DiskLineage = old.LineageHex;
                d.Generation = old.ReturnGeneration + 1;
                returnBase = old.ReturnGeneration;
            }
            else
            {
                d.DiskLineage = ResumeCookie.NewLineageHex();
                d.Generation = 1;
            }
            offers.Add(new DiskOffer(d.Name, d.Size, d.BlockSize, d.Cookie.LineageHex, resume, d.Finishing, ImageExtents.AllocatedBlockBytes(d.Image, d.Size, d.BlockSize),
                d.DiskLineage, d.Generation, returnBase));
        }
        var finishOnly = _disks.All(d => d.Finishing);
        if (finishOnly) _state.Decide(SwitchoverPlan.Finish);
        else if (_disks.Any(d => d.Finishing))
            throw new MigrationException($"disks {string.Join(", ", _disks.Where(d => d.Finishing).Select(d => d.Name))} were handed over, the others not: migrate them separately");
        try
        {
            _openingStage = "no Welcome after our Hello";
            var memoryKey = finishOnly ? null : _hypervisor.MemoryKey; // delivered inside the pinned channel only
            (var welcome, _roundTrip) = await session.GreetAsync(new HelloMessage(HelloMessage.CurrentVersion, offers, memoryKey), ct);
            if (memoryKey != null)
            {
                if (welcome.MemoryKeyDir is not { } keyDir)
                    throw new MigrationException("the receiver did not take the memory stream's key (it is older than this source): upgrade it, or pass --memory-plaintext");
                if (!Path.IsPathFullyQualified(keyDir) || keyDir.Any(char.IsControl))
                    throw new ProtocolException("the receiver named a bad directory for the memory key");
                _hypervisor.MemoryKeyDelivered(keyDir);
                if (_options.Plaintext) Warn("the memory stream's key crossed this --plaintext connection in the clear");
            }
            for (var i = 0; i < _disks.Count; i++)
            {
                var d = _disks[i];
                var resume = offers[i].Resume && welcome.Disks[i].Resume;
                // on a resume (or a finish) the receiver says what it recorded when the copy began
                if (resume && welcome.Disks[i].DiskLineage is { } kept)
                {
                    d.DiskLineage = kept.ToLowerInvariant();
                    d.Generation = welcome.Disks[i].Generation;
                }
                else if (resume) d.DiskLineage = null; // a receiver from before the return trip: nothing to record
                if (d.Finishing)
                {
                    if (!resume) throw new MigrationException($"disk {d.Name}: the receiver no longer holds the copy this hand-over went to");
                    d.Resumed = true;
                    d.Map.SetState(Maps.MapState.Tracking);
                    continue; // the cookie stays "handed over" until the commit
                }
                if (resume)
                {
                    d.Resumed = true;
                    Say($"disk {d.Name}: resuming lineage {d.Cookie!.LineageHex}: {d.Map.DirtyCount()} blocks to send");
                }
                else if (welcome.Disks[i].ReturnBase)
                {
                    d.ReturnBaseBlocks = d.Map.Blocks - d.Map.DirtyCount();
                    Say($"disk {d.Name}: return trip: the receiver holds generation {offers[i].ReturnBase} of lineage {d.DiskLineage} untouched; " +
                        $"{d.Map.DirtyCount()} blocks written since to send, {d.ReturnBaseBlocks} taken from its image");
                }
                else
                {
                    d.Map.MarkBlocks(0, d.Map.Blocks);
                    if (offers[i].ReturnBase != null)
                        Say($"disk {d.Name}: return base refused by the receiver: {PeerText.Clean(welcome.Disks[i].ReturnRefused ?? "no reason given")}; full copy");
                    Say($"disk {d.Name}: full copy of {d.Size} bytes in {d.Map.Blocks} blocks of {d.BlockSize}");
                }
                d.Cookie = d.Cookie! with { State = CookieState.Running };
                d.Map.SetCookie(d.Cookie.Encode());
                d.Map.SetState(Maps.MapState.Tracking);
            }
            if (!finishOnly) _state.Decide(ChooseGateResume(welcome.Disks) ? SwitchoverPlan.Gate : SwitchoverPlan.Commit);
            _zstdOffered = welcome.Codecs?.Contains(WelcomeMessage.Zstd) == true;
            _receiverRecord = welcome.RecordMs is { } recordMs ? TimeSpan.FromMilliseconds(recordMs) : null;
            _seedKey = welcome.SeedKey is { } seedKey && !finishOnly ? Convert.FromHexString(seedKey) : null;
            if (_seedKey != null) Say("the receiver holds seed images: the first round sends block hashes first, data only for blocks it cannot find");
        }
        catch (IOException e)
        {
            throw new TransportException($"link to the receiver failed during the handshake: {e.Message}");
        }
    }

    /// <summary>
    /// Gate mode needs a VM that resumes (not with no hypervisor), a gate on every destination disk, and
    /// no --verify (the images are compared before the destination VM may run); otherwise commit mode.
    /// </summary>
    private bool ChooseGateResume(IReadOnlyList<DiskAnswer> answers)
    {
        if (_options.Switchover != SwitchoverMode.Gate || _hypervisor is Hypervisors.NoneHypervisor) return false;
        string? why = _options.Verify ? "--verify compares the images before the destination VM runs"
            : answers.FirstOrDefault(a => !a.Gated) is { } a ? $"disk {a.Name} has no gate at the destination (no shim in gate mode serves it there)"
            : null;
        Say(why == null
            ? "switchover: gate (the destination VM resumes once the final set is gated; the last blocks land while it runs)"
            : $"switchover: commit, not gate: {why}");
        return why == null;
    }

    /// <summary>
    /// Three empty zero-range frames, each on an idle link: their send→ack times give the round trip
    /// the switchover will pay on top of its data (the handshake's own time includes the receiver
    /// creating files, and frames during the copy queue behind each other).
    /// </summary>
    private async Task MeasureRoundTripAsync(CancellationToken ct)
    {
        var disk = _disks[0];
        for (var i = 0; i < 3; i++)
        {
            await _sender!.SendAsync(new OutgoingFrame(new DataHeader(disk.Index, DataEncoding.Zero, 0, 0),
                ReadOnlyMemory<byte>.Empty, null, disk, 0, 0), ct);
            await _sender.DrainAsync(ct);
        }
    }
}
