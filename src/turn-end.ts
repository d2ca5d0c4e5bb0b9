/**
 * End-of-turn writes shared by the node connections, the client reply queues and the write log:
 * one setImmediate per event-loop turn (after the poll phase, so everything read in the turn is
 * batched), in a fixed order. The requests for the node leave first: at -P 1 a turn writes to
 * dozens of clients, one syscall each, and the node executes its batch meanwhile instead of
 * waiting behind them. The write log's file write comes last: nobody waits for it.
 *
 * What is scheduled while the turn's writes run (a client resumed by its flush sends more) goes
 * out at the end of the next turn, after the loop has polled again.
 */
export interface TurnWriter {
  writeTurn(): void;
}

let requests: TurnWriter[] = [];
let replies: TurnWriter[] = [];
let files: TurnWriter[] = [];
let scheduled = false;

/** `writer` (a node connection) writes once at the end of this turn, first. */
export function writeRequestsAtTurnEnd(writer: TurnWriter): void {
  requests.push(writer);
  schedule();
}

/** `writer` (a client's reply queue) writes once at the end of this turn, after the requests. */
export function writeRepliesAtTurnEnd(writer: TurnWriter): void {
  replies.push(writer);
  schedule();
}

/** `writer` (the write log) writes once at the end of this turn, last. */
export function writeFileAtTurnEnd(writer: TurnWriter): void {
  files.push(writer);
  schedule();
}

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  setImmediate(endTurn);
}

function endTurn(): void {
  scheduled = false;
  const turn = [requests, replies, files];
  requests = [];
  replies = [];
  files = [];
  for (const writers of turn) for (const w of writers) w.writeTurn();
}
