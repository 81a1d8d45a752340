namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    /// <summary>
    /// Before the hand-over: stop the hypervisor's part, stop talking to the receiver, then put back
    /// into each map every bit that was taken and not acknowledged, release the throttle and the freeze,
    /// and mark the map's cookie resumable (if this run got as far as setting it running): a later run
    /// to the same receiver continues from the map's bits.
    /// </summary>
    private async Task AbortAsync(Exception reason)
    {
        SetPhase(MigrationPhase.Aborting);
        Say("aborting: " + reason.Message);
        try
        {
            using var t = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await _hypervisor.AbortAsync(t.Token);
        }
        catch (Exception e)
        {
            Say($"hypervisor {_hypervisor.Name}: abort failed: {e.Message}");
        }
        if (_sender != null)
        {
            await _sender.DisposeAsync();
            _sender = null;
        }
        if (_channel != null)
        {
            await _channel.DisposeAsync();
        }
        foreach (var d in _disks)
        {
            try
            {
                var back = d.GiveBack();
                d.Map.SetThrottle(0);
                if (d.Frozen)
                {
                    d.Map.Thaw();
                    d.Frozen = false;
                }
                if (d.Cookie is { State: CookieState.Running } c)
                {
                    d.Cookie = c with { State = CookieState.Resumable };
                    d.Map.SetCookie(d.Cookie.Encode());
                }
                d.Map.SetState(Maps.MapState.None, Maps.MapState.Tracking);
                Say($"disk {d.Name}: {back} unacknowledged blocks given back; {d.Map.DirtyCount()} blocks dirty for the next run");
            }
            catch (BlockMigrateException e)
            {
                Say($"disk {d.Name}: could not restore the map: {e.Message}");
            }
        }
        if (_throttle > 0) ReleaseThrottle();
    }
}
